"""Index: write EMBEDDED_CHUNK rows into the Weaviate collection, and retire stale chunks.

Object ids are the chunk ids (uuid5 of document and text), so a re-run overwrites instead of
duplicating. Every batch's ``failed_objects`` is checked: failures become ERROR rows for their
documents, and only documents written whole count as written. Old chunks of a document are
deleted only after its new ones are confirmed in the index (write new, verify, delete old).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from schemas.collection import PROPERTIES, VECTOR_NAME
from schemas.records import EMBEDDED_CHUNK, check_table
from tasks.stemming import stem_text

if TYPE_CHECKING:
    import weaviate

STAGE = "index"
_DELETE_BATCH = 20  # documents per look-up (offset paging stops at 10,000 results)


@dataclass
class WriteResult:
    objects_written: int = 0
    chunk_ids: dict[str, list[str]] = field(default_factory=dict)  # doc_id -> ids written
    chunk_order: dict[str, int] = field(default_factory=dict)  # chunk id -> chunk_index
    failed_docs: dict[str, tuple[str, str]] = field(default_factory=dict)  # doc_id -> (uri, reason)

    def merge(self, other: WriteResult) -> None:
        self.objects_written += other.objects_written
        for doc_id, ids in other.chunk_ids.items():
            self.chunk_ids.setdefault(doc_id, []).extend(ids)
        self.chunk_order.update(other.chunk_order)
        self.failed_docs.update(other.failed_docs)


class ChunkWriter:
    """Writes chunks with the client's fixed-size batcher; one per process (holds a client)."""

    def __init__(self, client: weaviate.WeaviateClient, collection: str, config_hash: str,
                 batch_size: int, concurrent_requests: int) -> None:
        self.client = client
        self.collection = client.collections.use(collection)
        self.config_hash = config_hash
        self.batch_size = batch_size
        self.concurrent_requests = concurrent_requests

    def write(self, table: pa.Table) -> WriteResult:
        """Upsert every row; a rejected object is reported, not raised.

        Raises:
            ConnectionError: Weaviate stopped answering (after the client's own retries with backoff,
                bounded by ``WEAVIATE_BATCH_MAX_RETRIES``): the run fails and is retried as a whole
                instead of sending every remaining batch into the same wait.
        """
        table = check_table(table, EMBEDDED_CHUNK, STAGE)
        now = dt.datetime.now(dt.UTC)
        rows = table.to_pylist()
        result = WriteResult()
        by_uuid: dict[str, dict[str, Any]] = {}
        with self.collection.batch.fixed_size(self.batch_size, self.concurrent_requests) as batch:
            for row in rows:
                by_uuid[row["chunk_id"]] = row
                batch.add_object(
                    properties=self._properties(row, now),
                    uuid=row["chunk_id"],
                    vector={VECTOR_NAME: row["vector"]},
                )
        failures = self.collection.batch.failed_objects
        if failures and not self.client.is_ready():
            raise ConnectionError(f"Weaviate stopped answering during the upsert: {len(failures)} of {len(rows)} "
                                  f"objects not written ({failures[0].message[:200]})")
        for failed in failures:
            row = by_uuid.get(str(failed.original_uuid))
            if row is not None:
                result.failed_docs[row["doc_id"]] = (row["source_uri"], failed.message[:300])
        for row in rows:
            if row["doc_id"] in result.failed_docs:
                continue
            result.objects_written += 1
            result.chunk_ids.setdefault(row["doc_id"], []).append(row["chunk_id"])
            result.chunk_order[row["chunk_id"]] = row["chunk_index"]
        return result

    def _properties(self, row: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
        props = {name: row[name] for name in PROPERTIES if name in row and row[name] is not None}
        props["text_stemmed"] = stem_text(row["text"])
        props["config_hash"] = self.config_hash
        props["ingested_at"] = now
        return props


def count_objects(client: weaviate.WeaviateClient, collection: str) -> int:
    return int(client.collections.use(collection).aggregate.over_all(total_count=True).total_count or 0)


def delete_stale_chunks(client: weaviate.WeaviateClient, collection: str,
                        keep: dict[str, list[str]]) -> int:
    """Delete objects of the given documents whose ids are not in ``keep`` (their new chunks).

    Call only after the new chunks are confirmed written. Returns the number deleted.
    """
    from weaviate.classes.query import Filter

    coll = client.collections.use(collection)
    deleted = 0
    doc_ids = sorted(keep)
    for start in range(0, len(doc_ids), _DELETE_BATCH):
        docs = doc_ids[start : start + _DELETE_BATCH]
        keep_ids = {cid for d in docs for cid in keep[d]}
        where = Filter.by_property("doc_id").contains_any(docs)
        stale = {str(o.uuid) for o in _filtered_objects(coll, where, return_properties=[])}
        deleted += delete_by_ids(coll, stale - keep_ids)
    return deleted


def put_objects(coll: Any, what: str, objects: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Insert or replace small vectorless objects, ``(uuid, properties)``, in batches of 200.

    Raises:
        RuntimeError: Weaviate rejected any of them (``what`` names the store in the message).
    """
    count = 0
    with coll.batch.fixed_size(200) as batch:
        for uuid, properties in objects:
            batch.add_object(uuid=uuid, properties=properties)
            count += 1
    failed = coll.batch.failed_objects
    if failed:
        raise RuntimeError(f"{what} write rejected {len(failed)} of {count} objects: {failed[0].message}")
    return count


def delete_by_ids(coll: Any, ids: Iterable[str]) -> int:
    """Delete objects by uuid, a thousand per request. Returns the number deleted."""
    from weaviate.classes.query import Filter

    ordered = sorted(set(ids))
    deleted = 0
    for start in range(0, len(ordered), 1000):
        res = coll.data.delete_many(where=Filter.by_id().contains_any(ordered[start : start + 1000]))
        deleted += int(res.successful)
    return deleted


def _filtered_objects(coll: Any, where: Any, include_vector: bool = False,
                      return_properties: list[str] | None = None) -> Iterator[Any]:
    """Every object matching ``where``. Weaviate's cursor cannot take a filter, so this pages by offset."""
    offset = 0
    while True:
        page = coll.query.fetch_objects(filters=where, limit=1000, offset=offset, include_vector=include_vector,
                                        return_properties=return_properties)
        yield from page.objects
        if len(page.objects) < 1000:
            return
        offset += len(page.objects)


def fetch_vectors(client: weaviate.WeaviateClient, collection: str, chunk_ids: list[str],
                  config_hash: str) -> dict[str, list[float]]:
    """Vectors already in the index for these chunk ids, written under the same semantic config.

    A chunk id is derived from its document and text, so an id found here with the same config
    hash holds exactly the vector the model would compute again: reusing it is exact.
    """
    from weaviate.classes.query import Filter

    coll = client.collections.use(collection)
    found: dict[str, list[float]] = {}
    for start in range(0, len(chunk_ids), 1000):
        ids = chunk_ids[start : start + 1000]
        where = Filter.by_id().contains_any(ids) & Filter.by_property("config_hash").equal(config_hash)
        res = coll.query.fetch_objects(filters=where, limit=len(ids), include_vector=True, return_properties=[])
        for obj in res.objects:
            vector = obj.vector.get(VECTOR_NAME) if isinstance(obj.vector, dict) else obj.vector
            if vector:
                found[str(obj.uuid)] = list(vector)
    return found


def missing_chunks(client: weaviate.WeaviateClient, collection: str, chunk_ids: list[str]) -> set[str]:
    """The ids among ``chunk_ids`` that the index does not hold (a write is confirmed by reading)."""
    from weaviate.classes.query import Filter

    coll = client.collections.use(collection)
    present: set[str] = set()
    for start in range(0, len(chunk_ids), 1000):
        ids = chunk_ids[start : start + 1000]
        res = coll.query.fetch_objects(filters=Filter.by_id().contains_any(ids), limit=len(ids), return_properties=[])
        present.update(str(o.uuid) for o in res.objects)
    return set(chunk_ids) - present


def delete_document_chunks(client: weaviate.WeaviateClient, collection: str, doc_ids: list[str]) -> int:
    """Delete every chunk of these documents. Returns the number deleted."""
    from weaviate.classes.query import Filter

    coll = client.collections.use(collection)
    deleted = 0
    for start in range(0, len(doc_ids), 100):
        res = coll.data.delete_many(where=Filter.by_property("doc_id").contains_any(doc_ids[start : start + 100]))
        deleted += int(res.successful)
    return deleted


def copy_document_chunks(client: weaviate.WeaviateClient, collection: str, old_doc_id: str,
                         new_doc: dict[str, Any]) -> list[str]:
    """Re-home a renamed document's chunks under its new identity, vectors included (no re-embed).

    Returns the new chunk ids in chunk_index order. The old chunks are left for the caller to
    delete once the copies are confirmed.
    """
    from collections import Counter

    from weaviate.classes.query import Filter

    from schemas.records import chunk_id_for

    coll = client.collections.use(collection)
    objects = list(_filtered_objects(coll, Filter.by_property("doc_id").equal(old_doc_id), include_vector=True))
    objects.sort(key=lambda o: o.properties["chunk_index"])
    seen: Counter[str] = Counter()
    new_ids: list[str] = []
    now = dt.datetime.now(dt.UTC)
    with coll.batch.fixed_size(200) as batch:
        for obj in objects:
            props = dict(obj.properties)
            seen[props["text_sha256"]] += 1
            new_id = chunk_id_for(new_doc["doc_id"], props["text_sha256"], seen[props["text_sha256"]])
            props.update(doc_id=new_doc["doc_id"], source_uri=new_doc["source_uri"], ingested_at=now)
            vector = obj.vector.get(VECTOR_NAME) if isinstance(obj.vector, dict) else obj.vector
            batch.add_object(properties=props, uuid=new_id, vector={VECTOR_NAME: vector})
            new_ids.append(new_id)
    if coll.batch.failed_objects:
        raise RuntimeError(f"copy of {old_doc_id} rejected: {coll.batch.failed_objects[0].message}")
    return new_ids
