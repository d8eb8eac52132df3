"""Diff: compare a discovery listing with the ledger and plan the run. Pure, no IO.

A source is *unchanged* when its bytes (sha256) and the semantic config are those the ledger
recorded; only those need no work at all. Same bytes under a new path with the old path gone is
a *rename* (no re-parse, no re-embed). Everything else under the root is *new*, *modified*
or *deleted*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from schemas.records import DOCUMENT, check_table
from tasks.deadletter import DeadLetter, retry_due

STAGE = "diff"


@dataclass(frozen=True)
class LedgerEntry:
    doc_id: str
    source_uri: str
    size: int
    mtime_ns: int
    content_sha256: str
    config_hash: str
    chunk_ids: tuple[str, ...]  # in chunk_index order
    root_uri: str = ""  # the folder it was ingested from


@dataclass
class Rename:
    old: LedgerEntry
    new: dict[str, object]  # the DOCUMENT row at the new path


@dataclass
class ChangePlan:
    to_process: pa.Table  # DOCUMENT rows to parse, chunk, embed and write (new + modified)
    new: list[str] = field(default_factory=list)  # doc ids
    modified: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    touched: list[dict[str, object]] = field(default_factory=list)  # same bytes, new mtime: ledger only
    renamed: list[Rename] = field(default_factory=list)
    deleted: list[LedgerEntry] = field(default_factory=list)
    not_retried: list[DeadLetter] = field(default_factory=list)  # failed before, unchanged, not retryable


def known_stats(ledger: Mapping[str, LedgerEntry]) -> dict[str, tuple[int, int, str]]:
    """uri -> (size, mtime_ns, sha256): lets discovery skip hashing files whose stat is unchanged."""
    return {uri: (e.size, e.mtime_ns, e.content_sha256) for uri, e in ledger.items()}


def plan_changes(documents: pa.Table, ledger: Mapping[str, LedgerEntry], config_hash: str,
                 unreadable: set[str] | frozenset[str] = frozenset(),
                 dead_letters: Mapping[str, DeadLetter] | None = None) -> ChangePlan:
    """Classify every listed document and every ledger entry under the same root.

    Args:
        documents: This run's listing (DOCUMENT), hashes filled in.
        ledger: The ledger entries under the listed root, by source_uri.
        config_hash: The semantic config hash of this run.
        unreadable: URIs that were listed but could not be read: never treated as deleted.
        dead_letters: Sources that failed before, by source_uri: a new or modified one is processed
            again only when its failure was retryable or its bytes or the config changed.
    """
    documents = check_table(documents, DOCUMENT, STAGE)
    plan = ChangePlan(to_process=DOCUMENT.empty_table())
    listed = {row["source_uri"]: row for row in documents.to_pylist()}
    candidates: list[dict[str, object]] = []
    for uri, row in listed.items():
        old = ledger.get(uri)
        if old is None:
            candidates.append(row)
        elif old.content_sha256 == row["content_sha256"] and old.config_hash == config_hash:
            plan.unchanged.append(str(row["doc_id"]))
            if (old.size, old.mtime_ns) != (row["size"], row["mtime_ns"]):
                plan.touched.append(row)
        else:
            plan.modified.append(str(row["doc_id"]))
    gone = [e for uri, e in ledger.items() if uri not in listed and uri not in unreadable]
    by_hash: dict[str, list[LedgerEntry]] = {}
    for entry in gone:
        if entry.config_hash == config_hash:
            by_hash.setdefault(entry.content_sha256, []).append(entry)
    renamed_from: set[str] = set()
    for row in candidates:
        matches = by_hash.get(str(row["content_sha256"]))
        if matches:
            old = matches.pop()
            renamed_from.add(old.source_uri)
            plan.renamed.append(Rename(old=old, new=row))
        else:
            plan.new.append(str(row["doc_id"]))
    plan.deleted = [e for e in gone if e.source_uri not in renamed_from]
    if dead_letters:
        by_id = {str(row["doc_id"]): row for row in listed.values()}
        skip = {doc_id: dead_letters[uri] for doc_id in plan.new + plan.modified
                if (uri := str(by_id[doc_id]["source_uri"])) in dead_letters
                and not retry_due(dead_letters[uri], str(by_id[doc_id]["content_sha256"]), config_hash)}
        plan.new = [d for d in plan.new if d not in skip]
        plan.modified = [d for d in plan.modified if d not in skip]
        plan.not_retried = list(skip.values())
    process = set(plan.new) | set(plan.modified)
    rows = [row for row in listed.values() if row["doc_id"] in process]
    plan.to_process = pa.Table.from_pylist(rows, schema=DOCUMENT)
    return plan


def mass_delete_refusal(plan: ChangePlan, ledger_size: int, max_fraction: float) -> str | None:
    """Why this plan's deletions must not run without an explicit override, or None."""
    if not plan.deleted or ledger_size == 0:
        return None
    share = len(plan.deleted) / ledger_size
    if share > max_fraction:
        return (f"the listing would delete {len(plan.deleted)} of {ledger_size} indexed sources "
                f"({share:.0%} > {max_fraction:.0%}); nothing was deleted. If the sources really "
                "are gone, re-run with --allow-mass-delete")
    return None
