"""The ledger: what the index holds for each source, stored in Weaviate beside the chunks.

Read at the start of a run, written last (after the new chunks are confirmed and the stale ones
deleted), so a run killed at any point leaves a ledger that describes an older state the next
run converges from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

from schemas.collection import ledger_name
from tasks.diff import LedgerEntry
from tasks.index import delete_by_ids, put_objects

if TYPE_CHECKING:
    import weaviate

_PROPS = ["source_uri", "size", "mtime_ns", "content_sha256", "config_hash", "chunk_ids", "root_uri"]


def read_ledger(
    client: weaviate.WeaviateClient, collection: str, uri_prefix: str | None = None
) -> dict[str, LedgerEntry]:
    """Every ledger entry (whose source_uri starts with ``uri_prefix``), by source_uri."""
    coll = client.collections.use(ledger_name(collection))
    entries: dict[str, LedgerEntry] = {}
    for obj in coll.iterator(return_properties=_PROPS):
        p = obj.properties
        uri = str(p["source_uri"])
        if uri_prefix and not uri.startswith(uri_prefix):
            continue
        entries[uri] = LedgerEntry(
            doc_id=str(obj.uuid), source_uri=uri, size=int(p["size"] or 0), mtime_ns=int(str(p["mtime_ns"])),
            content_sha256=str(p["content_sha256"]), config_hash=str(p["config_hash"]),
            chunk_ids=tuple(p.get("chunk_ids") or ()), root_uri=str(p.get("root_uri") or ""),
        )
    return entries


def ledger_size(client: weaviate.WeaviateClient, collection: str) -> int:
    coll = client.collections.use(ledger_name(collection))
    return int(coll.aggregate.over_all(total_count=True).total_count or 0)


def ledger_facts(client: weaviate.WeaviateClient, collection: str) -> tuple[list[str], list[str]]:
    """The folders the ledger's sources were ingested from, and the config hashes they were built with."""
    from weaviate.classes.aggregate import GroupByAggregate

    coll = client.collections.use(ledger_name(collection))
    facts = []
    for prop in ("root_uri", "config_hash"):
        groups = coll.aggregate.over_all(group_by=GroupByAggregate(prop=prop), total_count=True).groups
        facts.append(sorted(str(g.grouped_by.value) for g in groups if g.grouped_by.value))
    return facts[0], facts[1]


def write_entries(client: weaviate.WeaviateClient, collection: str, entries: Iterable[LedgerEntry]) -> int:
    """Insert or replace entries (uuid = doc_id). Raises if Weaviate rejects any."""
    now = dt.datetime.now(dt.UTC)
    return put_objects(client.collections.use(ledger_name(collection)), "ledger", (
        (e.doc_id, {"source_uri": e.source_uri, "size": e.size, "mtime_ns": str(e.mtime_ns),
                    "content_sha256": e.content_sha256, "config_hash": e.config_hash,
                    "chunk_ids": list(e.chunk_ids), "updated_at": now, "root_uri": e.root_uri})
        for e in entries))


def delete_entries(client: weaviate.WeaviateClient, collection: str, doc_ids: Iterable[str]) -> int:
    return delete_by_ids(client.collections.use(ledger_name(collection)), doc_ids)
