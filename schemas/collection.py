"""The Weaviate collections of an index: the chunks (BM25 fields, filterable identity, own vectors)
and, beside them, the ledger of every source they came from."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from schemas.config import CollectionConfig

if TYPE_CHECKING:
    import weaviate

VECTOR_NAME = "default"
TEXT_PROPERTY = "text"  # what LangChain / LlamaIndex Weaviate stores are pointed at

# name -> (data type, tokenization or None, searchable by BM25, filterable)
PROPERTIES: dict[str, tuple[str, str | None, bool, bool]] = {
    "text": ("text", "word", True, False),
    "text_stemmed": ("text", "word", True, False),  # text, Snowball-stemmed (tasks/stemming.py)
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
    "root_uri": ("text", "field", False, True),  # the folder it was ingested from: what a backfill re-reads
}

# The dead-letter store: one object per source that failed a stage (uuid = doc_id), beside the
# ledger; a source leaves it when it is indexed, deleted, or its version is dropped.
DEADLETTER_PROPERTIES: dict[str, tuple[str, str | None, bool, bool]] = {
    "source_uri": ("text", "field", False, True),
    "stage": ("text", "field", False, True),
    "error_type": ("text", "field", False, True),
    "message": ("text", "word", False, False),
    "retryable": ("boolean", None, False, True),
    "attempts": ("int", None, False, False),
    "first_seen": ("date", None, False, True),
    "last_seen": ("date", None, False, True),
    "content_sha256": ("text", "field", False, True),  # of the bytes that failed ('' when unreadable)
    "config_hash": ("text", "field", False, True),
}

# Write leases, one object per alias (see infra/weaviate/lease.py); shared by every index of a server.
LEASE_COLLECTION = "HeadwaterWriteLease"
LEASE_PROPERTIES: dict[str, tuple[str, str | None, bool, bool]] = {
    "alias": ("text", "field", False, True),
    "holder": ("text", "field", False, True),
    "host": ("text", "field", False, False),
    "pid": ("int", None, False, False),
    "purpose": ("text", "field", False, False),
    "acquired_at": ("date", None, False, False),
    "renewed_at": ("date", None, False, False),
}


def ledger_name(collection: str) -> str:
    return f"{collection}_HeadwaterLedger"


def deadletter_name(collection: str) -> str:
    return f"{collection}_HeadwaterErrors"


# Consumers query the alias (``index.collection``); it points at one version ``<alias>_v<N>``. A
# backfill builds the next version beside it and switches the alias in one call.
def version_name(alias: str, version: int) -> str:
    return f"{alias}_v{version}"


def versions(client: weaviate.WeaviateClient, alias: str) -> dict[int, str]:
    """Existing versions of an alias's collections, by version number."""
    pattern = re.compile(rf"^{re.escape(alias)}_v(\d+)$")
    found = {}
    for name in client.collections.list_all(simple=True):
        match = pattern.match(name)
        if match:
            found[int(match.group(1))] = name
    return found


def resolve_target(client: weaviate.WeaviateClient, alias: str) -> str | None:
    """The collection that ``alias`` names: the alias's target, a plain collection of that name (an
    index made before versioning), or None when there is neither."""
    found = client.alias.get(alias_name=alias)
    if found is not None:
        return found.collection
    return alias if client.collections.exists(alias) else None


def ensure_target(client: weaviate.WeaviateClient, alias: str, layout: CollectionConfig | None = None) -> str:
    """The collection ``alias`` names, creating version 1 (laid out by ``layout``) and the alias when
    there is none."""
    target = resolve_target(client, alias)
    if target is not None:
        ensure_collection(client, target, layout)
        return target
    target = version_name(alias, max(versions(client, alias), default=0) + 1)
    ensure_collection(client, target, layout)
    client.alias.create(alias_name=alias, target_collection=target)
    return target


def switch_alias(client: weaviate.WeaviateClient, alias: str, target: str) -> str | None:
    """Point ``alias`` at ``target`` in one call; returns the collection it named before.

    An index made before versioning is a plain collection named like the alias; Weaviate cannot
    alias a name a collection holds, so that one is dropped first (queries fail for that instant).
    """
    before = resolve_target(client, alias)
    if before == alias:
        client.collections.delete([alias, ledger_name(alias), deadletter_name(alias)])
        before = None
    if client.alias.get(alias_name=alias) is None:
        client.alias.create(alias_name=alias, target_collection=target)
    else:
        client.alias.update(alias_name=alias, new_target_collection=target)
    return before


def drop_version(client: weaviate.WeaviateClient, collection: str) -> None:
    """Delete a version, its ledger and its dead-letter store."""
    client.collections.delete([collection, ledger_name(collection), deadletter_name(collection)])


class CollectionMismatch(RuntimeError):
    """An existing collection lacks properties Headwater writes: a different or older schema."""


def ensure_collection(client: weaviate.WeaviateClient, name: str,
                      layout: CollectionConfig | None = None) -> weaviate.collections.Collection:
    """Create the chunk collection, its ledger and dead-letter store, or check that existing ones
    have every property.

    Args:
        layout: Shards, replication, HNSW and compression of collections created here (default: one
            node's layout); an existing collection keeps its own.

    Raises:
        CollectionMismatch: an existing collection misses properties or types differ.
    """
    layout = layout or CollectionConfig()
    _ensure(client, ledger_name(name), LEDGER_PROPERTIES, "Headwater ledger: one object per indexed source.",
            layout, vector=False)
    _ensure(client, deadletter_name(name), DEADLETTER_PROPERTIES,
            "Headwater dead letters: one object per source that failed a stage.", layout, vector=False)
    return _ensure(client, name, PROPERTIES, "Headwater chunks: hybrid (BM25 + vector) retrieval units.",
                   layout, vector=True)


def ensure_lease_collection(client: weaviate.WeaviateClient,
                            layout: CollectionConfig | None = None) -> weaviate.collections.Collection:
    return _ensure(client, LEASE_COLLECTION, LEASE_PROPERTIES, "Headwater write leases, one per alias.",
                   layout or CollectionConfig(), vector=False)


def _ensure(client: weaviate.WeaviateClient, name: str, spec: dict[str, tuple[str, str | None, bool, bool]],
            description: str, layout: CollectionConfig, vector: bool) -> weaviate.collections.Collection:
    from weaviate.classes.config import Configure

    if client.collections.exists(name):
        collection = client.collections.use(name)
        existing = {p.name: p.data_type.value for p in collection.config.get().properties}
        wrong = {k: v[0] for k, v in spec.items() if k in existing and existing[k] != v[0]}
        if wrong:
            raise CollectionMismatch(
                f"collection {name!r} exists but its properties differ from Headwater's for "
                f"{sorted(wrong)}; ingest into a new collection (--collection) or drop it"
            )
        for prop in spec.keys() - existing.keys():  # added by a later Headwater: new objects fill it
            collection.config.add_property(_property(prop, *spec[prop]))
        return collection

    properties = [_property(prop, *rest) for prop, rest in spec.items()]
    replication = _replication(layout)
    if not vector:
        # Small side collections: one shard, replicated like the chunks so that losing a node loses
        # neither the ledger nor the lease.
        return client.collections.create(name, description=description, properties=properties,
                                         sharding_config=Configure.sharding(desired_count=1),
                                         replication_config=replication)
    return client.collections.create(
        name,
        description=description,
        properties=properties,
        vector_config=Configure.Vectors.self_provided(name=VECTOR_NAME, vector_index_config=vector_index(layout)),
        inverted_index_config=Configure.inverted_index(bm25_b=0.75, bm25_k1=1.2),
        sharding_config=Configure.sharding(desired_count=layout.shards) if layout.shards else None,
        replication_config=replication,
    )


def vector_index(layout: CollectionConfig) -> object:
    """The chunk vector's HNSW index (cosine) with the layout's graph parameters and compression."""
    from weaviate.classes.config import Configure, VectorDistances

    quantizers = {
        "default": None,
        "none": Configure.VectorIndex.Quantizer.none,
        "rq": lambda: Configure.VectorIndex.Quantizer.rq(bits=8),
        "sq": Configure.VectorIndex.Quantizer.sq,
        "pq": Configure.VectorIndex.Quantizer.pq,
        "bq": Configure.VectorIndex.Quantizer.bq,
    }
    make = quantizers[layout.compression]
    return Configure.VectorIndex.hnsw(
        distance_metric=VectorDistances.COSINE, ef_construction=layout.ef_construction,
        max_connections=layout.max_connections, ef=layout.ef, quantizer=make() if make else None,
    )


def _replication(layout: CollectionConfig) -> object | None:
    from weaviate.classes.config import Configure, ReplicationDeletionStrategy

    if layout.replication_factor == 1:
        return None  # one node: nothing to replicate, the server's defaults as before
    # Weaviate >= 1.38 runs async replication for every replicated collection. Ingest deletes superseded
    # chunks; a replica that missed a delete while down must not bring the chunk back when replicas are
    # reconciled: the newer of write and delete wins.
    return Configure.replication(factor=layout.replication_factor,
                                 deletion_strategy=ReplicationDeletionStrategy.TIME_BASED_RESOLUTION)


def _property(name: str, dtype: str, tok: str | None, searchable: bool, filterable: bool) -> object:
    from weaviate.classes.config import DataType, Property, Tokenization

    return Property(
        name=name,
        data_type=DataType(dtype),
        tokenization=Tokenization(tok) if tok else None,
        index_searchable=searchable if dtype.startswith("text") else None,
        index_filterable=filterable,
    )
