"""Query the index the way downstream consumers do: BM25, vector or hybrid, optionally re-ranked.

Hybrid search is Weaviate's (``alpha`` weighs the vector side, ``fusion`` picks ranked or
relative-score fusion); BM25 fields can be boosted (``title^2``). A re-ranker re-scores the top
``rerank_top`` hits with a cross-encoder (any :class:`Reranker`) and returns them in its order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

from schemas.collection import VECTOR_NAME
from schemas.config import QueryConfig
from tasks.stemming import stem_text, uses_stemmed

if TYPE_CHECKING:
    import weaviate

    from tasks.embed import Embedder

SearchMode = Literal["hybrid", "bm25", "vector"]
Fusion = Literal["ranked", "relative_score"]
_DEFAULTS = QueryConfig()  # the query settings measured best on NFCorpus (README)
BM25_PROPERTIES = _DEFAULTS.properties


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant."""

    def score(self, query: str, passages: list[str]) -> list[float]: ...


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` (a model name or local path); loads in :meth:`warm_up`."""

    def __init__(self, model: str, batch_size: int = 32) -> None:
        self.model_name = model
        self.batch_size = batch_size
        self._model: object = None

    def warm_up(self) -> None:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            from tasks.models import resolve_model

            self._model = CrossEncoder(resolve_model(self.model_name), device="cpu")

    def score(self, query: str, passages: list[str]) -> list[float]:
        self.warm_up()
        scores = self._model.predict([(query, p) for p in passages], batch_size=self.batch_size)  # type: ignore[attr-defined]
        return [float(x) for x in scores]
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
    score: float  # the final order's score: the re-ranker's when re-ranked, else the search's
    search_score: float = 0.0  # BM25 / hybrid score, or cosine similarity for vector search
    rerank_score: float | None = None


def search(
    client: weaviate.WeaviateClient,
    collection: str,
    query: str,
    mode: SearchMode,
    limit: int,
    embedder: Embedder | None = None,
    alpha: float = 0.5,
    *,
    fusion: Fusion = _DEFAULTS.fusion,
    properties: tuple[str, ...] = BM25_PROPERTIES,
    vector: list[float] | None = None,
    reranker: Reranker | None = None,
    rerank_top: int = 50,
) -> list[SearchHit]:
    """Top ``limit`` chunks for ``query``.

    Args:
        embedder: Required for ``vector`` and ``hybrid`` unless ``vector`` is given: the model that
            embedded the index.
        alpha: Hybrid weight of the vector side (0 = BM25 only, 1 = vector only).
        fusion: How hybrid search fuses its two lists: ``ranked`` (reciprocal rank) or ``relative_score``.
        properties: BM25 fields, each optionally boosted (``"title^2"``); with ``text_stemmed`` the
            keyword query is stemmed too (so every field listed should be a stemmed one).
        vector: The query's embedding, when the caller has it already.
        reranker: Re-score the top ``max(limit, rerank_top)`` hits and return the best ``limit``.

    Raises:
        ValueError: a vector mode without an embedder or a vector.
    """
    from weaviate.classes.config import ConsistencyLevel
    from weaviate.classes.query import HybridFusion, MetadataQuery

    # Reads answer from one replica: with replication on a cluster, a node down never stops search.
    coll = client.collections.use(collection).with_consistency_level(ConsistencyLevel.ONE)
    meta = MetadataQuery(score=True, distance=True)
    fetch = max(limit, rerank_top) if reranker is not None else limit
    keywords = stem_text(query) if uses_stemmed(properties) else query
    if mode == "bm25":
        res = coll.query.bm25(keywords, query_properties=list(properties), limit=fetch,
                              return_metadata=meta, return_properties=_RETURN)
    else:
        if vector is None:
            if embedder is None:
                raise ValueError(f"mode {mode!r} needs the embedding model")
            vector = embedder.encode([query])[0].tolist()
        if mode == "vector":
            res = coll.query.near_vector(vector, target_vector=VECTOR_NAME, limit=fetch,
                                         return_metadata=meta, return_properties=_RETURN)
        else:
            how = HybridFusion.RANKED if fusion == "ranked" else HybridFusion.RELATIVE_SCORE
            res = coll.query.hybrid(keywords, vector=vector, alpha=alpha, target_vector=VECTOR_NAME,
                                    query_properties=list(properties), fusion_type=how, limit=fetch,
                                    return_metadata=meta, return_properties=_RETURN)
    hits = [_hit(o, mode) for o in res.objects]
    return rerank(query, hits, reranker)[:limit] if reranker is not None else hits


def rerank(query: str, hits: list[SearchHit], reranker: Reranker) -> list[SearchHit]:
    """``hits`` in the re-ranker's order, each carrying both scores."""
    if not hits:
        return hits
    scores = reranker.score(query, [h.text for h in hits])
    rescored = [replace(h, score=s, rerank_score=s) for h, s in zip(hits, scores, strict=True)]
    return sorted(rescored, key=lambda h: h.rerank_score or 0.0, reverse=True)


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
        search_score=score,
    )
