"""The Weaviate collections of an index: the chunks (BM25 fields, filterable identity, own vectors)
and, beside them, the ledger of every source they came from."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import weaviate

VECTOR_NAME = "default"
TEXT_PROPERTY = "text"  # what LangChain / LlamaIndex Weaviate stores are pointed at

# name -> (data type, tokenization or None, searchable by BM25, filterable)
PROPERTIES: dict[str, tuple[str, str | None, bool, bool]] = {
    "text": ("text", "word", True, False),
    "title": ("text", "word", True, True),
    "section": ("text", "word", True, True),
    "doc_id": ("text", "field", False, True),
    "source_uri": ("text", "field", False, True),
    "chunk_index": ("int", None, False, True),
    "chunk_count": ("int", None, False, True),
    "content_sha256": ("text", "field", False, True),
    "text_sha256": ("text", "field", False, True),
    "config_hash": ("text", "field", False, True),
    "page_number": ("int", None, False, True),
    "mime_type": ("text", "field", False, True),
    "token_count": ("int", None, False, False),
    "ingested_at": ("date", None, False, True),
}


# The ledger: one object per source (uuid = doc_id), kept beside the chunks it describes, so it
# travels with the index (laptop, Ray cluster or Prefect worker) and never describes another.
LEDGER_PROPERTIES: dict[str, tuple[str, str | None, bool, bool]] = {
    "source_uri": ("text", "field", False, True),
    "size": ("int", None, False, False),
    "mtime_ns": ("text", "field", False, False),  # text: nanoseconds overflow JSON's exact integers
    "content_sha256": ("text", "field", False, True),
    "config_hash": ("text", "field", False, True),
    "chunk_ids": ("text[]", "field", False, False),  # in chunk_index order
    "updated_at": ("date", None, False, True),
}


def ledger_name(collection: str) -> str:
    return f"{collection}_HeadwaterLedger"


class CollectionMismatch(RuntimeError):
    """An existing collection lacks properties Headwater writes: a different or older schema."""


def ensure_collection(client: weaviate.WeaviateClient, name: str) -> weaviate.collections.Collection:
    """Create the chunk collection and its ledger, or check that existing ones have every property.

    Raises:
        CollectionMismatch: an existing collection misses properties or types differ.
    """
    _ensure(client, ledger_name(name), LEDGER_PROPERTIES, "Headwater ledger: one object per indexed source.",
            vector=False)
    return _ensure(client, name, PROPERTIES, "Headwater chunks: hybrid (BM25 + vector) retrieval units.",
                   vector=True)


def _ensure(client: weaviate.WeaviateClient, name: str, spec: dict[str, tuple[str, str | None, bool, bool]],
            description: str, vector: bool) -> weaviate.collections.Collection:
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

    if client.collections.exists(name):
        collection = client.collections.use(name)
        existing = {p.name: p.data_type.value for p in collection.config.get().properties}
        wrong = {k: v[0] for k, v in spec.items() if existing.get(k) != v[0]}
        if wrong:
            raise CollectionMismatch(
                f"collection {name!r} exists but its properties differ from Headwater's for "
                f"{sorted(wrong)}; ingest into a new collection (--collection) or drop it"
            )
        return collection

    properties = [
        Property(
            name=prop,
            data_type=DataType(dtype),
            tokenization=Tokenization(tok) if tok else None,
            index_searchable=searchable if dtype.startswith("text") else None,
            index_filterable=filterable,
        )
        for prop, (dtype, tok, searchable, filterable) in spec.items()
    ]
    index = Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE) if vector else None
    return client.collections.create(
        name,
        description=description,
        properties=properties,
        vector_config=Configure.Vectors.self_provided(name=VECTOR_NAME, vector_index_config=index),
        inverted_index_config=Configure.inverted_index(bm25_b=0.75, bm25_k1=1.2),
    )
