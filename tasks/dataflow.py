"""The one place where stages meet Ray: parse -> chunk -> embed -> index as a Ray Data stream.

Stages stay plain functions and classes; here they are mapped onto Ray Data (parse and chunk in
one actor pool, embedding in another, each loading its models once per actor, and the Weaviate
writer as a ``Datasink``). Error records and per-stage counters go to one small actor, so the run report
sees every worker's numbers on a laptop and on a cluster alike. The stream is bounded by Ray
Data's back-pressure; nothing is materialised per corpus.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult as RayWriteResult

from infra.faults import crash_point, kill_point
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from schemas.config import HeadwaterConfig
from schemas.records import EMBEDDED_CHUNK, ERROR, check_table, error_table
from tasks.chunk import make_chunker
from tasks.embed import Embedder, with_vectors
from tasks.index import ChunkWriter, WriteResult, fetch_vectors
from tasks.isolate import IsolatedParser
from tasks.parse import parse_document, parse_documents

# Small blocks, so one slow file never holds many others back: a block closes at this many
# documents or this many bytes, whichever comes first (a large file gets a block of its own).
_DOCS_PER_BLOCK = 8
_BYTES_PER_BLOCK = 512 * 1024


@dataclass
class StageStats:
    rows_in: int = 0
    rows_out: int = 0
    dropped: int = 0
    seconds: float = 0.0


@dataclass
class DataflowResult:
    stages: dict[str, StageStats]
    errors: pa.Table  # ERROR
    written: WriteResult = field(default_factory=WriteResult)
    runtimes: dict[str, str] = field(default_factory=dict)  # stage -> how it ran, e.g. "openvino bf16 on cpu"


@ray.remote(num_cpus=0)
class RunStats:
    """Counters and error records of every stage, from every worker."""

    def __init__(self, documents: int) -> None:
        self.documents = documents
        self.stages: dict[str, StageStats] = {}
        self.errors: list[pa.Table] = []
        self.runtimes: dict[str, str] = {}

    def describe(self, stage: str, runtime: str) -> None:
        self.runtimes[stage] = runtime

    def parsing_done(self) -> bool:
        return self.stages.get("parse", StageStats()).rows_in >= self.documents

    def record(self, stage: str, rows_in: int, rows_out: int, seconds: float, errors: pa.Table) -> None:
        stats = self.stages.setdefault(stage, StageStats())
        stats.rows_in += rows_in
        stats.rows_out += rows_out
        stats.dropped += errors.num_rows
        stats.seconds += seconds
        if errors.num_rows:
            self.errors.append(errors)

    def snapshot(self) -> tuple[dict[str, StageStats], pa.Table, dict[str, str]]:
        errors = pa.concat_tables(self.errors) if self.errors else ERROR.empty_table()
        return self.stages, errors, self.runtimes


class ParseChunkStep:
    """Ray Data actor: parses a block of documents and chunks them.

    An actor, not a task: unstructured's imports, its spaCy model and the tokenizer load once
    per process (seconds each) instead of in every short-lived worker. With
    ``parse_limits.isolate`` the parser runs in a child process of the actor, under the per-document
    time limit and memory cap.
    """

    def __init__(self, config: HeadwaterConfig, stats: Any) -> None:
        self.config = config
        self.stats = stats
        self.chunker = make_chunker(config.chunk, config.embed_model)
        self.chunker.warm_up()
        self.parse_one = IsolatedParser(config.parse, config.parse_limits) if config.parse_limits.isolate \
            else parse_document

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        kill_point("parse")
        parsed = parse_documents(batch, self.config.parse, self.parse_one)
        parsed_at = time.perf_counter()
        chunks = self.chunker.chunk(parsed.elements)
        ray.get([
            self.stats.record.remote("parse", batch.num_rows, parsed.elements.num_rows, parsed_at - started,
                                     parsed.errors),
            self.stats.record.remote("chunk", parsed.elements.num_rows, chunks.num_rows,
                                     time.perf_counter() - parsed_at, ERROR.empty_table()),
        ])
        return chunks


class EmbedStep:
    """Ray Data actor: loads the model once, then embeds batches across documents.

    A chunk whose id the index already holds under the same semantic config keeps its vector
    (ids derive from document and text, so the vector would come out the same): only new or
    edited text is embedded. With ``embed.threads`` unset, torch gets the node's cores left over
    by parsing while parse tasks run, and all of them once parsing is done: two busy processes
    fighting over the same cores make torch several times slower than either alone.
    """

    def __init__(self, config: HeadwaterConfig, stats: Any, parse_slots: int, endpoint: WeaviateEndpoint) -> None:
        self.embedder = Embedder(config.embed_model, config.embed)
        self.embedder.warm_up()
        self.stats = stats
        stats.describe.remote("embed", self.embedder.describe())
        self.collection = config.index.collection
        self.config_hash = config.semantic_hash()
        self.endpoint = endpoint
        self.client: Any = None  # connected on first use: a failure there is a retryable task error
        self.adaptive = config.embed.threads is None and self.embedder.device == "cpu"
        self.node_cpus = _node_cpus()
        self.parse_slots = parse_slots

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        kill_point("embed")
        ids = batch.column("chunk_id").to_pylist()
        if self.client is None:
            self.client = self.endpoint.connect()
        known = fetch_vectors(self.client, self.collection, ids, self.config_hash)
        reuse = [i for i, cid in enumerate(ids) if cid in known]
        fresh = [i for i, cid in enumerate(ids) if cid not in known]
        parts = []
        if reuse:
            parts.append(with_vectors(batch.take(reuse), [known[ids[i]] for i in reuse]))
        reused_at = time.perf_counter()
        if fresh:
            if self.adaptive:
                busy = 0 if ray.get(self.stats.parsing_done.remote()) else self.parse_slots
                self.embedder.set_threads(max(1, self.node_cpus - busy))
            parts.append(self.embedder.embed(batch.take(fresh)))
        out = pa.concat_tables(parts) if parts else EMBEDDED_CHUNK.empty_table()
        ray.get([
            self.stats.record.remote("reuse", len(ids), len(reuse), reused_at - started, ERROR.empty_table()),
            self.stats.record.remote("embed", len(fresh), len(fresh), time.perf_counter() - reused_at,
                                     ERROR.empty_table()),
        ])
        return out


class WeaviateSink(Datasink[WriteResult]):
    """Writes embedded chunks to Weaviate from Ray write tasks (each with its own client)."""

    def __init__(self, endpoint: WeaviateEndpoint, config: HeadwaterConfig, stats: Any) -> None:
        self.endpoint = endpoint
        self.config = config
        self.stats = stats
        self.result = WriteResult()

    def get_name(self) -> str:
        return "WeaviateUpsert"

    @property
    def min_rows_per_write(self) -> int | None:
        return self.config.index.batch_size * 10  # a task's fixed cost (client, Ray) spread over 10 batches

    def write(self, blocks: Iterable[pa.Table], ctx: Any) -> WriteResult:
        started = time.perf_counter()
        result = WriteResult()
        # One write (one pass of the client's batcher) per task, not per block: starting and draining
        # the batcher for every small block made a task's writes ~6x slower than one pass
        # (benchmarks/upsert.py).
        tables = [check_table(t, EMBEDDED_CHUNK, "index") for t in
                  (b if isinstance(b, pa.Table) else pa.Table.from_pandas(b) for b in blocks)
                  if t.num_rows]  # Ray may hand on empty blocks without columns
        rows_in = sum(t.num_rows for t in tables)
        if tables:
            with weaviate_client(self.endpoint) as client:
                writer = ChunkWriter(client, self.config.index.collection, self.config.semantic_hash(),
                                     self.config.index.batch_size, self.config.index.concurrent_requests)
                result.merge(writer.write(pa.concat_tables(tables)))
                crash_point("during_upsert")
        errors = error_table([
            {"doc_id": doc_id, "source_uri": uri, "stage": "index", "error_type": "WeaviateRejected",
             "message": reason, "retryable": True}
            for doc_id, (uri, reason) in result.failed_docs.items()
        ])
        ray.get(self.stats.record.remote("index", rows_in, result.objects_written,
                                         time.perf_counter() - started, errors))
        return result

    def on_write_complete(self, write_result: RayWriteResult[WriteResult]) -> None:
        for part in write_result.write_returns:
            self.result.merge(part)


def run_dataflow(documents: pa.Table, config: HeadwaterConfig, endpoint: WeaviateEndpoint) -> DataflowResult:
    """Run parse -> chunk -> embed -> index over a DOCUMENT table on the current Ray cluster."""
    # A worker's own exception (e.g. Weaviate unreachable), not Ray Data's UserCodeException around it:
    # the flow's retry rule and the CLI classify it, and a wrapper's cause does not survive pickling.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    stats = RunStats.remote(documents.num_rows)  # type: ignore[attr-defined]
    result = DataflowResult(stages={}, errors=ERROR.empty_table())
    if documents.num_rows:
        sink = WeaviateSink(endpoint, config, stats)
        # Writers mostly wait on Weaviate: a fraction of a CPU each, so they stream alongside
        # parsing instead of queueing behind it.
        _build(documents, config, stats, endpoint).write_datasink(sink, ray_remote_args={"num_cpus": 0.25},
                                                                  concurrency=config.index.write_tasks)
        result.written = sink.result
    result.stages, result.errors, result.runtimes = ray.get(stats.snapshot.remote())
    ray.kill(stats)
    return result


def _node_cpus() -> int:
    """Cores this process may run on (respects affinity and container CPU sets)."""
    return len(os.sched_getaffinity(0)) or 1


def _blocks(documents: pa.Table) -> Iterator[pa.Table]:
    start, size = 0, 0
    for i, nbytes in enumerate(documents.column("size").to_pylist()):
        size += nbytes
        if i + 1 - start >= _DOCS_PER_BLOCK or size >= _BYTES_PER_BLOCK:
            yield documents.slice(start, i + 1 - start)
            start, size = i + 1, 0
    if start < documents.num_rows:
        yield documents.slice(start)


def _build(documents: pa.Table, config: HeadwaterConfig, stats: Any, endpoint: WeaviateEndpoint) -> ray.data.Dataset:
    # Largest files first: the long tail of parse times then overlaps with everything else.
    documents = documents.sort_by([("size", "descending")])
    blocks = list(_blocks(documents))
    gpus = config.embed.num_gpus_per_actor
    cpus_total = int(ray.cluster_resources().get("CPU", 1))
    parse_slots = config.ray.parse_concurrency or max(1, cpus_total - 1)
    dataset = ray.data.from_arrow(blocks)
    # Named in the dashboard's Ray Data view and metrics (operators: MapBatches(ParseChunkStep),
    # MapBatches(EmbedStep), Write to the WeaviateUpsert sink) instead of an anonymous dataset id.
    dataset.set_name(f"headwater-{config.index.collection}")
    return (
        dataset
        .map_batches(ParseChunkStep, fn_constructor_args=(config, stats), batch_format="pyarrow",
                     batch_size=None, compute=ActorPoolStrategy(size=parse_slots), num_cpus=0.75)
        .map_batches(EmbedStep, fn_constructor_args=(config, stats, parse_slots, endpoint), batch_format="pyarrow",
                     batch_size=config.embed.batch_size * 4,
                     compute=ActorPoolStrategy(size=config.embed.num_actors),
                     # fractional CPUs: on 2 cores a whole-CPU actor pool can starve the parse tasks
                     num_cpus=0.5 if not gpus else 0, num_gpus=gpus or None)
    )
