"""Query the index the way downstream consumers do: BM25, vector or hybrid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from schemas.collection import VECTOR_NAME

if TYPE_CHECKING:
    import weaviate

    from tasks.embed import Embedder

SearchMode = Literal["hybrid", "bm25", "vector"]
BM25_PROPERTIES = ("text", "title", "section")
_RETURN = ["text", "title", "section", "source_uri", "page_number", "chunk_index", "doc_id"]


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    doc_id: str
    source_uri: str
    title: str | None
    section: str | None
    page_number: int | None
    chunk_index: int
    text: str
    score: float


def search(
    client: weaviate.WeaviateClient,
    collection: str,
    query: str,
    mode: SearchMode,
    limit: int,
    embedder: Embedder | None = None,
    alpha: float = 0.5,
) -> list[SearchHit]:
    """Top ``limit`` chunks for ``query``.

    Args:
        embedder: Required for ``vector`` and ``hybrid``: the model that embedded the index.
        alpha: Hybrid weight of the vector side (0 = BM25 only, 1 = vector only).

    Raises:
        ValueError: a vector mode without an embedder.
    """
    from weaviate.classes.query import MetadataQuery

    coll = client.collections.use(collection)
    meta = MetadataQuery(score=True, distance=True)
    if mode == "bm25":
        res = coll.query.bm25(query, query_properties=list(BM25_PROPERTIES), limit=limit,
                              return_metadata=meta, return_properties=_RETURN)
    else:
        if embedder is None:
            raise ValueError(f"mode {mode!r} needs the embedding model")
        vector = embedder.encode([query])[0].tolist()
        if mode == "vector":
            res = coll.query.near_vector(vector, target_vector=VECTOR_NAME, limit=limit,
                                         return_metadata=meta, return_properties=_RETURN)
        else:
            res = coll.query.hybrid(query, vector=vector, alpha=alpha, target_vector=VECTOR_NAME,
                                    query_properties=list(BM25_PROPERTIES), limit=limit,
                                    return_metadata=meta, return_properties=_RETURN)
    return [_hit(o, mode) for o in res.objects]


def _hit(obj: object, mode: SearchMode) -> SearchHit:
    props = obj.properties  # type: ignore[attr-defined]
    meta = obj.metadata  # type: ignore[attr-defined]
    score = 1.0 - float(meta.distance or 0.0) if mode == "vector" else float(meta.score or 0.0)
    return SearchHit(
        chunk_id=str(obj.uuid),  # type: ignore[attr-defined]
        doc_id=str(props.get("doc_id")),
        source_uri=str(props.get("source_uri")),
        title=props.get("title"),
        section=props.get("section"),
        page_number=props.get("page_number"),
        chunk_index=int(props.get("chunk_index") or 0),
        text=str(props.get("text") or ""),
        score=score,
    )
