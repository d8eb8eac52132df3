"""``ingest_flow``: bring the index up to date with a folder, as a few coarse Prefect tasks.

Prefect sees the phases (plan, renames, the Ray dataflow, confirm and retire, ledger), never one
task per document: the per-document fan-out is Ray's job. The order is what makes a crash at
any point harmless: new chunks are written and confirmed before stale ones are deleted, and the
ledger is written last, so the next run redoes whatever the killed one had not finished.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from flows.report import publish_ingest_report
from infra.faults import crash_point
from infra.ray.runtime import RayOnDemand
from infra.retry import retry_if_transient
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client, weaviate_endpoint
from infra.weaviate.lease import write_lease
from schemas.collection import ensure_target
from schemas.config import HeadwaterConfig, load_config
from schemas.records import ERROR, error_table
from tasks import check_stage_chain
from tasks.dataflow import DataflowResult, StageStats, run_dataflow
from tasks.deadletter import (
    DeadLetter,
    as_error_row,
    delete_dead_letters,
    merge_failures,
    read_dead_letters,
    write_dead_letters,
)
from tasks.diff import ChangePlan, LedgerEntry, known_stats, mass_delete_refusal, plan_changes
from tasks.discover import Discovery, discover_documents, source_uri_for
from tasks.index import copy_document_chunks, count_objects, delete_document_chunks, delete_stale_chunks, missing_chunks
from tasks.ledger import delete_entries, ledger_facts, ledger_size, read_ledger, write_entries


@dataclass
class IngestReport:
    sources: list[str]
    collection: str  # the alias consumers query
    target: str = ""  # the version it names, which this run wrote
    documents_seen: int = 0
    documents_added: int = 0
    documents_modified: int = 0
    documents_renamed: int = 0
    documents_deleted: int = 0
    documents_unchanged: int = 0
    documents_failed: int = 0  # failing now: failed in this run, or before and not retried
    documents_not_retried: int = 0  # of those, failed before with the same bytes (see `headwater errors`)
    chunks: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_deleted: int = 0
    objects_written: int = 0
    objects_in_collection: int = 0
    ledger_sources: int = 0
    deletion_refused: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # busy seconds, summed over a stage's workers
    stage_rows: dict[str, list[int]] = field(default_factory=dict)  # [rows in, rows out] per dataflow stage
    embed_runtime: str = ""  # how the embed stage ran, e.g. "openvino bf16 on cpu"
    wall_seconds: float = 0.0
    dashboard_url: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def source(self) -> str:
        return ", ".join(self.sources)


class IndexConfigChanged(RuntimeError):
    """The run's parser, chunker or model differs from the one the live index was built with."""


@dataclass
class Inventory:
    found: Discovery
    plan: ChangePlan
    ledger: dict[str, LedgerEntry]
    ledger_total: int
    dead_letters: dict[str, DeadLetter]


# Every task is safe to run again (deterministic ids, writes before deletes, ledger last), so a
# transient fault (Weaviate restarting, a timeout, a 5xx) is retried with backoff; nothing else is.
RETRYABLE: dict[str, Any] = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=5),
                             "retry_jitter_factor": 0.5, "retry_condition_fn": retry_if_transient,
                             "cache_policy": NONE}


@task(name="resolve-index", **RETRYABLE)
def resolve_task(config: HeadwaterConfig, endpoint: WeaviateEndpoint) -> str:
    """The version the alias names (created on the first run); refuses a changed semantic config.

    Raises:
        IndexConfigChanged: the live index was built with another parser/chunker/model config.
    """
    alias = config.index.collection
    with weaviate_client(endpoint) as client:
        target = ensure_target(client, alias, config.collection)
        _, hashes = ledger_facts(client, target)
    mine = config.semantic_hash()
    if hashes and hashes != [mine]:
        raise IndexConfigChanged(
            f"index {alias!r} ({target}) was built with config {', '.join(hashes)}; this run's parser, "
            f"chunker or model config is {mine}. Run `headwater backfill` to rebuild it under the new "
            "config and switch the alias: an ingest would mix both in one index."
        )
    return target


@task(name="plan-changes", **RETRYABLE)
def plan_task(source: Path, config: HeadwaterConfig, endpoint: WeaviateEndpoint) -> Inventory:
    """List the source and diff it against the ledger of the collection ``config`` is bound to."""
    prefix = source_uri_for(source) + ("/" if source.is_dir() else "")
    with weaviate_client(endpoint) as client:
        ledger = read_ledger(client, config.index.collection, prefix)
        total = ledger_size(client, config.index.collection)
        dead = read_dead_letters(client, config.index.collection, prefix)
    found = discover_documents(source, config.parse, known_stats(ledger))
    unreadable = set(found.errors.column("source_uri").to_pylist())
    plan = plan_changes(found.documents, ledger, config.semantic_hash(), unreadable, dead)
    return Inventory(found, plan, ledger, total, dead)


@task(name="apply-renames", **RETRYABLE)
def rename_task(
    inv: Inventory, root_uri: str, config: HeadwaterConfig, endpoint: WeaviateEndpoint
) -> tuple[list[LedgerEntry], pa.Table]:
    """Copy renamed documents' chunks (vectors included) to their new identity; no re-embedding.

    A rename whose old chunks are not all in the index any more (a run killed after deleting
    them, before its ledger write) is processed like a new document instead; returned as rows.
    """
    entries, fallback = [], []
    with weaviate_client(endpoint) as client:
        for rename in inv.plan.renamed:
            ids = copy_document_chunks(client, config.index.collection, rename.old.doc_id, rename.new)
            if len(ids) == len(rename.old.chunk_ids):
                entries.append(_entry(rename.new, root_uri, config, ids))
            else:
                fallback.append(rename.new)
    return entries, pa.Table.from_pylist(fallback, schema=inv.plan.to_process.schema)


@task(name="ray-dataflow", **RETRYABLE)
def dataflow_task(documents: pa.Table, config: HeadwaterConfig, endpoint: WeaviateEndpoint) -> DataflowResult:
    return run_dataflow(documents, config, endpoint)


@task(name="confirm-and-retire", **RETRYABLE)
def retire_task(inv: Inventory, processed: pa.Table, result: DataflowResult, renamed: list[LedgerEntry],
                root_uri: str, config: HeadwaterConfig, endpoint: WeaviateEndpoint,
                allow_mass_delete: bool) -> tuple[list[LedgerEntry], list[str], int, str | None]:
    """Confirm each document's new chunks are in the index, then delete what they supersede.

    Returns the ledger entries to write (documents confirmed whole), the ledger entries to drop
    (sources whose chunks were deleted), chunks deleted, and the reason deletions of vanished
    sources were refused, if they were.
    """
    coll = config.index.collection
    rows = {r["doc_id"]: r for r in processed.to_pylist()}
    with weaviate_client(endpoint) as client:
        written = result.written.chunk_ids
        missing = missing_chunks(client, coll, [cid for ids in written.values() for cid in ids])
        done = {d: ids for d, ids in written.items() if d in rows and not missing.intersection(ids)}
        renamed_ids = {e.doc_id: list(e.chunk_ids) for e in renamed}
        missing |= missing_chunks(client, coll, [cid for ids in renamed_ids.values() for cid in ids])
        renamed_ok = {d: ids for d, ids in renamed_ids.items() if not missing.intersection(ids)}
        crash_point("after_upsert")
        deleted = delete_stale_chunks(client, coll, {**done, **renamed_ok})
        refusal = mass_delete_refusal(inv.plan, inv.ledger_total, config.index.max_delete_fraction)
        gone = [e.doc_id for e in inv.plan.deleted] if (refusal is None or allow_mass_delete) else []
        confirmed = set(renamed_ok) | set(done)
        old_of_renamed = [r.old.doc_id for r in inv.plan.renamed if r.new["doc_id"] in confirmed]
        deleted += delete_document_chunks(client, coll, gone + old_of_renamed)
        crash_point("after_delete")
    entries = [_entry(rows[d], root_uri, config, _ordered(ids, result)) for d, ids in done.items()]
    entries += [e for e in renamed if e.doc_id in renamed_ok]
    entries += [_entry(row, root_uri, config, inv.ledger[str(row["source_uri"])].chunk_ids)
                for row in inv.plan.touched]
    return entries, gone + old_of_renamed, deleted, refusal if not allow_mass_delete else None


@task(name="write-ledger", **RETRYABLE)
def ledger_task(entries: list[LedgerEntry], retired: list[str], failures: list[DeadLetter], cleared: list[str],
                config: HeadwaterConfig, endpoint: WeaviateEndpoint) -> tuple[int, int]:
    """Record the run (ledger and dead letters); returns objects in the collection and sources in the ledger."""
    crash_point("before_ledger")
    with weaviate_client(endpoint) as client:
        write_entries(client, config.index.collection, entries)
        delete_entries(client, config.index.collection, retired)
        write_dead_letters(client, config.index.collection, failures)
        delete_dead_letters(client, config.index.collection, cleared)
        return count_objects(client, config.index.collection), ledger_size(client, config.index.collection)


@flow(name="ingest", log_prints=True)
def ingest_flow(source: str | None = None, config: HeadwaterConfig | None = None,
                allow_mass_delete: bool = False) -> IngestReport:
    """Bring the index up to date with every document under ``source`` (or each ``index.sources``).

    Holds the index's write lease for the whole run; writes the version the alias names.

    Args:
        source: Folder (or file) to ingest; default: every folder of ``index.sources``.
        config: The run's configuration; default: :func:`schemas.config.load_config`.
        allow_mass_delete: Delete vanished sources even beyond ``index.max_delete_fraction``.

    Returns:
        Counts by outcome, per-stage seconds and the error records of the run.

    Raises:
        FileNotFoundError: a source does not exist (nothing is changed).
        ValueError: no source given and ``index.sources`` is empty.
        WriteLeaseHeld: another run is writing this index (nothing is changed).
        IndexConfigChanged: the semantic config differs from the live index's (run a backfill).
    """
    config = config or load_config()
    started = time.perf_counter()
    roots = source_roots([source] if source else list(config.index.sources))
    report = IngestReport(sources=[str(r) for r in roots], collection=config.index.collection)
    check_stage_chain()
    idx = config.index
    with weaviate_endpoint(config.weaviate) as endpoint, \
            write_lease(endpoint, idx.collection, "ingest", idx.lease_wait_s, idx.lease_ttl_s, config.collection), \
            RayOnDemand(config.ray) as ray_runtime:
        report.target = resolve_task(config, endpoint)
        report.stage_seconds["plan"] = time.perf_counter() - started
        for root in roots:
            refresh_source(root, config.bound_to(report.target), endpoint, ray_runtime, report, allow_mass_delete)
    report.wall_seconds = time.perf_counter() - started
    publish_ingest_report("ingest", report, config)
    return report


def source_roots(sources: list[str]) -> list[Path]:
    """Resolved source folders; every one must exist before anything is changed."""
    if not sources:
        raise ValueError("discover: no source given and index.sources is empty")
    roots = [Path(s).expanduser().resolve() for s in sources]
    for given, root in zip(sources, roots, strict=True):
        if not root.exists():
            raise FileNotFoundError(f"discover: source {given} does not exist")
    return roots


def refresh_source(root: Path, config: HeadwaterConfig, endpoint: WeaviateEndpoint, ray_runtime: RayOnDemand,
                   report: IngestReport, allow_mass_delete: bool = False) -> None:
    """Bring ``config.index.collection`` (a version, not the alias) up to date with one source folder,
    adding the outcome to ``report``."""
    started = time.perf_counter()
    root_uri = source_uri_for(root)
    inv = plan_task(root, config, endpoint)
    _add_seconds(report, "plan", time.perf_counter() - started)
    crash_point("after_discover")
    renamed, fallback = rename_task(inv, root_uri, config, endpoint)
    to_process = pa.concat_tables([inv.plan.to_process, fallback])
    result = DataflowResult(stages={}, errors=ERROR.empty_table())
    if to_process.num_rows:
        report.dashboard_url = ray_runtime.ensure().dashboard_url
        result = dataflow_task(to_process, config, endpoint)
    entries, retired, deleted, refused = retire_task(
        inv, to_process, result, renamed, root_uri, config, endpoint, allow_mass_delete)
    failures, cleared = _dead_letters(inv, to_process, result, config)
    report.objects_in_collection, report.ledger_sources = ledger_task(
        entries, retired, failures, cleared, config, endpoint)
    report.chunks_deleted += deleted
    report.deletion_refused = report.deletion_refused or refused
    _add(report, inv, result, refused is not None)


def _dead_letters(inv: Inventory, processed: pa.Table, result: DataflowResult,
                  config: HeadwaterConfig) -> tuple[list[DeadLetter], list[str]]:
    """Records to write for this run's failures, and the doc ids whose records are cleared (the source
    was indexed, or is gone)."""
    errors = pa.concat_tables([inv.found.errors, result.errors]).to_pylist()
    attempted = dict(zip(processed.column("doc_id").to_pylist(), processed.column("content_sha256").to_pylist(),
                         strict=True))
    failures = merge_failures(inv.dead_letters, errors, attempted, config.semantic_hash(), dt.datetime.now(dt.UTC))
    still_failing = {str(e["source_uri"]) for e in errors} | {d.source_uri for d in inv.plan.not_retried}
    cleared = [d.doc_id for uri, d in inv.dead_letters.items() if uri not in still_failing]
    return failures, cleared


def _entry(row: dict[str, Any], root_uri: str, config: HeadwaterConfig,
           chunk_ids: list[str] | tuple[str, ...]) -> LedgerEntry:
    return LedgerEntry(doc_id=str(row["doc_id"]), source_uri=str(row["source_uri"]), size=int(row["size"]),
                       mtime_ns=int(row["mtime_ns"]), content_sha256=str(row["content_sha256"]),
                       config_hash=config.semantic_hash(), chunk_ids=tuple(chunk_ids), root_uri=root_uri)


def _ordered(ids: list[str], result: DataflowResult) -> list[str]:
    order = result.written.chunk_order
    return sorted(ids, key=lambda cid: order.get(cid, 0))


def _add_seconds(report: IngestReport, stage: str, seconds: float) -> None:
    report.stage_seconds[stage] = report.stage_seconds.get(stage, 0.0) + seconds


def _add(report: IngestReport, inv: Inventory, result: DataflowResult, deletion_refused: bool) -> None:
    not_retried = error_table([as_error_row(d) for d in inv.plan.not_retried])
    errors = pa.concat_tables([inv.found.errors, result.errors, not_retried])
    failed_ids = set(errors.column("doc_id").to_pylist())
    plan = inv.plan
    report.documents_seen += inv.found.documents.num_rows + inv.found.errors.num_rows
    report.documents_added += len(set(plan.new) - failed_ids)
    report.documents_modified += len(set(plan.modified) - failed_ids)
    report.documents_renamed += len(plan.renamed)
    report.documents_deleted += 0 if deletion_refused else len(plan.deleted)
    report.documents_unchanged += len(plan.unchanged)
    report.documents_failed += len(failed_ids)
    report.documents_not_retried += len(inv.plan.not_retried)
    stages = result.stages
    report.chunks += stages.get("chunk", StageStats()).rows_out
    report.chunks_embedded += stages.get("embed", StageStats()).rows_out
    report.chunks_reused += stages.get("reuse", StageStats()).rows_out
    report.objects_written += result.written.objects_written
    report.embed_runtime = result.runtimes.get("embed", report.embed_runtime)
    for stage, stats in stages.items():
        _add_seconds(report, stage, stats.seconds)
        rows = report.stage_rows.setdefault(stage, [0, 0])
        rows[0] += stats.rows_in
        rows[1] += stats.rows_out
    report.errors += errors.select(ERROR.names).to_pylist()
