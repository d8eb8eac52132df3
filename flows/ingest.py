"""``ingest_flow``: a folder into the Weaviate index, as a few coarse Prefect tasks.

Prefect sees five tasks (contracts, discover, index set-up, the Ray dataflow, retiring stale
chunks), never one task per document: the per-document fan-out is Ray's job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NONE

from infra.ray.runtime import init_ray, shutdown_ray
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client, weaviate_endpoint
from schemas.collection import ensure_collection
from schemas.config import HeadwaterConfig, load_config
from schemas.records import ERROR
from tasks import check_stage_chain
from tasks.dataflow import DataflowResult, StageStats, run_dataflow
from tasks.discover import Discovery, discover_documents
from tasks.index import count_objects, delete_stale_chunks


@dataclass
class IngestReport:
    source: str
    collection: str
    documents_seen: int = 0
    documents_parsed: int = 0
    documents_failed: int = 0
    chunks: int = 0
    objects_written: int = 0
    stale_deleted: int = 0
    objects_in_collection: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    dashboard_url: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


@task(name="check-contracts", cache_policy=NONE)
def check_contracts() -> None:
    check_stage_chain()


@task(name="discover", cache_policy=NONE)
def discover_task(source: Path, config: HeadwaterConfig) -> Discovery:
    return discover_documents(source, config.parse)


@task(name="prepare-index", cache_policy=NONE)
def prepare_index(endpoint: WeaviateEndpoint, config: HeadwaterConfig) -> int:
    with weaviate_client(endpoint) as client:
        ensure_collection(client, config.index.collection)
        return count_objects(client, config.index.collection)


@task(name="ray-dataflow", cache_policy=NONE)
def dataflow_task(documents: pa.Table, config: HeadwaterConfig, endpoint: WeaviateEndpoint) -> DataflowResult:
    return run_dataflow(documents, config, endpoint)


@task(name="retire-stale-chunks", cache_policy=NONE)
def retire_stale(endpoint: WeaviateEndpoint, config: HeadwaterConfig, result: DataflowResult) -> tuple[int, int]:
    """Delete chunks superseded in this run (new ones are already confirmed); count the index."""
    with weaviate_client(endpoint) as client:
        deleted = delete_stale_chunks(client, config.index.collection, result.written.chunk_ids)
        return deleted, count_objects(client, config.index.collection)


@flow(name="ingest", log_prints=True)
def ingest_flow(source: str, config: HeadwaterConfig | None = None) -> IngestReport:
    """Parse, chunk, embed and upsert every document under ``source``.

    Args:
        source: Folder (or file) to ingest.
        config: The run's configuration; default: :func:`schemas.config.load_config`.

    Returns:
        Counts, per-stage seconds and the error records of the run.
    """
    config = config or load_config()
    started = time.perf_counter()
    report = IngestReport(source=source, collection=config.index.collection)
    check_contracts()
    found = discover_task(Path(source), config)
    report.documents_seen = found.documents.num_rows + found.errors.num_rows
    report.stage_seconds["discover"] = time.perf_counter() - started
    with weaviate_endpoint(config.weaviate) as endpoint:
        prepare_index(endpoint, config)
        runtime = init_ray(config.ray)
        report.dashboard_url = runtime.dashboard_url
        try:
            result = dataflow_task(found.documents, config, endpoint)
        finally:
            shutdown_ray(runtime)
        report.stale_deleted, report.objects_in_collection = retire_stale(endpoint, config, result)
    _fill(report, found, result)
    report.wall_seconds = time.perf_counter() - started
    return report


def _fill(report: IngestReport, found: Discovery, result: DataflowResult) -> None:
    errors = pa.concat_tables([found.errors, result.errors]) if result.errors.num_rows else found.errors
    failed_ids = set(errors.column("doc_id").to_pylist())
    report.documents_failed = len(failed_ids)
    parse_failed = {e["doc_id"] for e in errors.to_pylist() if e["stage"] == "parse"}
    report.documents_parsed = found.documents.num_rows - len(parse_failed)
    report.chunks = result.stages.get("chunk", StageStats()).rows_out
    report.objects_written = result.written.objects_written
    for stage, stats in result.stages.items():
        report.stage_seconds[stage] = stats.seconds
    report.errors = errors.select(ERROR.names).to_pylist()
