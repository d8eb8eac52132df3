"""Verify: audit the ledger against the index, and repair what does not match.

Checks that every chunk the ledger records is in the index (missing), that every object in the
index belongs to a ledger entry (orphans) and to its current version (stale), that no document
position is held twice (duplicates), and that the counts agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas.collection import resolve_target
from tasks.index import delete_by_ids
from tasks.ledger import delete_entries, read_ledger

if TYPE_CHECKING:
    import weaviate


@dataclass
class Audit:
    ledger_sources: int = 0
    expected_chunks: int = 0
    index_objects: int = 0
    missing: dict[str, list[str]] = field(default_factory=dict)  # doc_id -> chunk ids not in the index
    orphans: list[str] = field(default_factory=list)  # objects of documents the ledger does not know
    stale: list[str] = field(default_factory=list)  # objects of known documents, not their current chunks
    duplicates: list[str] = field(default_factory=list)  # objects sharing a (doc_id, chunk_index)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.orphans or self.stale or self.duplicates) and \
            self.index_objects == self.expected_chunks

    def rows(self) -> list[tuple[str, int, str]]:
        """(check, count, status) for a report table."""
        def status(n: int) -> str:
            return "ok" if n == 0 else "PROBLEM"
        missing = sum(len(v) for v in self.missing.values())
        mismatch = self.index_objects - self.expected_chunks
        return [
            ("ledger sources", self.ledger_sources, "info"),
            ("chunks the ledger records", self.expected_chunks, "info"),
            ("objects in the index", self.index_objects, "info"),
            ("missing chunks", missing, status(missing)),
            ("orphan objects", len(self.orphans), status(len(self.orphans))),
            ("stale objects", len(self.stale), status(len(self.stale))),
            ("duplicate positions", len(self.duplicates), status(len(self.duplicates))),
            ("count mismatch (index - ledger)", mismatch, status(mismatch)),
        ]


def audit_index(client: weaviate.WeaviateClient, collection: str) -> Audit:
    """Compare every ledger entry with every object of the collection (one pass over each).

    ``collection`` may be the alias: the version it names is audited.
    """
    collection = resolve_target(client, collection) or collection
    ledger = read_ledger(client, collection)
    expected = {e.doc_id: set(e.chunk_ids) for e in ledger.values()}
    audit = Audit(ledger_sources=len(ledger), expected_chunks=sum(len(v) for v in expected.values()))
    present: set[str] = set()
    positions: Counter[tuple[str, int]] = Counter()
    by_position: dict[tuple[str, int], list[str]] = {}
    for obj in client.collections.use(collection).iterator(return_properties=["doc_id", "chunk_index"]):
        uuid, doc_id = str(obj.uuid), str(obj.properties["doc_id"])
        present.add(uuid)
        if doc_id not in expected:
            audit.orphans.append(uuid)
        elif uuid not in expected[doc_id]:
            audit.stale.append(uuid)
        else:
            key = (doc_id, int(obj.properties["chunk_index"] or 0))
            positions[key] += 1
            by_position.setdefault(key, []).append(uuid)
    audit.duplicates = [u for key, n in positions.items() if n > 1 for u in by_position[key][1:]]
    audit.index_objects = len(present)
    for doc_id, ids in expected.items():
        lost = sorted(ids - present)
        if lost:
            audit.missing[doc_id] = lost
    return audit


def repair_index(client: weaviate.WeaviateClient, collection: str, audit: Audit) -> tuple[int, int]:
    """Delete orphan, stale and duplicate objects; forget ledger entries whose chunks are missing.

    A forgotten entry makes the next ingest treat that source as new, which rebuilds its chunks
    (reusing the vectors of those still present). Returns (objects deleted, entries forgotten).
    """
    collection = resolve_target(client, collection) or collection
    coll = client.collections.use(collection)
    deleted = delete_by_ids(coll, set(audit.orphans) | set(audit.stale) | set(audit.duplicates))
    forgotten = delete_entries(client, collection, audit.missing) if audit.missing else 0
    return deleted, forgotten


@dataclass
class Verification:
    before: Audit
    deleted: int = 0  # objects deleted by the repair
    forgotten: int = 0  # ledger entries forgotten by the repair (rebuilt by the next ingest)
    after: Audit | None = None  # the audit after a repair

    @property
    def final(self) -> Audit:
        return self.after or self.before


def verify_index(client: weaviate.WeaviateClient, collection: str, repair: bool = False) -> Verification:
    """Audit ``collection`` (or the version an alias names); with ``repair``, repair what is wrong and
    audit again."""
    result = Verification(audit_index(client, collection))
    if repair and not result.before.clean:
        result.deleted, result.forgotten = repair_index(client, collection, result.before)
        result.after = audit_index(client, collection)
    return result
