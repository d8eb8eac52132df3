"""Upsert benchmark: the pipeline's Weaviate writer against a plain weaviate-client batch import.

    uv run python benchmarks/upsert.py --work /tmp/hwupsert [--docs 3633] [--rounds 3]

The objects are NFCorpus's chunks as the pipeline makes them (the first ``--docs`` documents,
chunked by the pipeline's chunker) with seeded random unit vectors of the model's dimension (384),
so no embedding time is involved. Each round writes them into fresh collections of the pipeline's
schema on an embedded Weaviate under DIR, three ways, in turn:
  1. the writer (``tasks.index.ChunkWriter.write``, as each Ray write task calls it: blocks of
     ``10 x index.batch_size`` rows, one client), from the EMBEDDED_CHUNK table: it builds the
     properties (Snowball-stemmed text included) and checks every failed object;
  2. raw: ``collection.batch.fixed_size(index.batch_size, index.concurrent_requests)`` and
     ``add_object`` of the very same properties, uuids and vectors, built before the clock starts;
  3. the writer behind Ray Data (``WeaviateSink`` under ``write_datasink``, as the pipeline runs it).
Prints objects/s per path (median over rounds) and writer / raw (target >= 0.9).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.environment import apply_quiet_defaults

apply_quiet_defaults()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from embed import chunks_of  # noqa: E402

from infra.weaviate.connection import weaviate_client, weaviate_endpoint  # noqa: E402
from schemas.collection import VECTOR_NAME, drop_version, ensure_collection  # noqa: E402
from schemas.config import HeadwaterConfig, load_config  # noqa: E402
from schemas.records import EMBEDDED_CHUNK  # noqa: E402
from tasks.index import ChunkWriter, count_objects  # noqa: E402


def with_random_vectors(chunks: pa.Table, dim: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((chunks.num_rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    column = pa.array(list(vectors), type=pa.list_(pa.float32()))
    return chunks.append_column("vector", column).select(EMBEDDED_CHUNK.names).cast(EMBEDDED_CHUNK)


def write_with_writer(client: object, name: str, table: pa.Table, config: HeadwaterConfig) -> None:
    idx = config.index
    writer = ChunkWriter(client, name, config.semantic_hash(), idx.batch_size, idx.concurrent_requests)  # type: ignore[arg-type]
    block = idx.batch_size * 10
    for start in range(0, table.num_rows, block):
        result = writer.write(table.slice(start, block))
        if result.failed_docs:
            sys.exit(f"writer: {len(result.failed_docs)} documents failed: {next(iter(result.failed_docs.values()))}")


def raw_objects(client: object, name: str, table: pa.Table, config: HeadwaterConfig) -> list[tuple[str, dict, list]]:
    """The exact objects the writer sends, built ahead (a raw import starts from ready objects)."""
    writer = ChunkWriter(client, name, config.semantic_hash(), 1, 1)  # type: ignore[arg-type]
    now = dt.datetime.now(dt.UTC)
    return [(row["chunk_id"], writer._properties(row, now), row["vector"]) for row in table.to_pylist()]


def write_raw(client: object, name: str, objects: list[tuple[str, dict, list]], config: HeadwaterConfig) -> None:
    coll = client.collections.use(name)  # type: ignore[attr-defined]
    with coll.batch.fixed_size(config.index.batch_size, config.index.concurrent_requests) as batch:
        for uuid, properties, vector in objects:
            batch.add_object(properties=properties, uuid=uuid, vector={VECTOR_NAME: vector})
    if coll.batch.failed_objects:
        sys.exit(f"raw import: {len(coll.batch.failed_objects)} objects failed")


def write_with_ray(endpoint: object, name: str, table: pa.Table, config: HeadwaterConfig) -> None:
    import ray

    from tasks.dataflow import RunStats, WeaviateSink

    bound = config.bound_to(name)
    stats = RunStats.remote(0)  # type: ignore[attr-defined]
    sink = WeaviateSink(endpoint, bound, stats)  # type: ignore[arg-type]
    blocks = [table.slice(s, 64) for s in range(0, table.num_rows, 64)]  # embed-batch-sized blocks, as in a run
    ray.data.from_arrow(blocks).write_datasink(sink, ray_remote_args={"num_cpus": 0.25},
                                               concurrency=config.index.write_tasks)
    ray.kill(stats)
    if sink.result.failed_docs:
        sys.exit(f"Ray sink: {len(sink.result.failed_docs)} documents failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, default=Path("../shared/data/beir/nfcorpus"))
    parser.add_argument("--docs", type=int, default=3633)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    config = load_config(overrides={"weaviate": {"data_dir": str(args.work / "weaviate")}})
    table = with_random_vectors(chunks_of(args.beir, args.docs, config), 384, args.seed)
    print(f"{table.num_rows} chunks of {args.docs} NFCorpus documents, random 384-d vectors; batch size "
          f"{config.index.batch_size}, {config.index.concurrent_requests} concurrent requests", flush=True)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rates: dict[str, list[float]] = {"writer": [], "raw": [], "writer via Ray Data": []}
    with weaviate_endpoint(config.weaviate) as endpoint, weaviate_client(endpoint) as client:
        paths: dict[str, Callable[[str], None]] = {
            "writer": lambda name: write_with_writer(client, name, table, config),
            "raw": lambda name: write_raw(client, name, objects, config),
            "writer via Ray Data": lambda name: write_with_ray(endpoint, name, table, config),
        }
        objects = raw_objects(client, "Unused", table, config)
        # Ray's write workers start before the clock does: as many write tasks at once as a run has
        # (each worker process starts once, seconds under uv, a cost a long ingest pays once)
        drop_version(client, "UpsertBench_Warmup")
        ensure_collection(client, "UpsertBench_Warmup")
        per_task = config.index.batch_size * 10  # WeaviateSink.min_rows_per_write
        write_with_ray(endpoint, "UpsertBench_Warmup", table.slice(0, per_task * config.index.write_tasks), config)
        drop_version(client, "UpsertBench_Warmup")
        for r in range(args.rounds):
            for label, write in paths.items():
                name = f"UpsertBench_{label.split()[0].capitalize()}_{r}"
                drop_version(client, name)
                ensure_collection(client, name)
                started = time.perf_counter()
                write(name)
                seconds = time.perf_counter() - started
                count = count_objects(client, name)
                if count != table.num_rows:
                    sys.exit(f"{label}: {count} objects in {name}, expected {table.num_rows}")
                rates[label].append(table.num_rows / seconds)
                print(f"round {r + 1} {label:<20} {table.num_rows / seconds:8.1f} objects/s ({seconds:.1f} s)",
                      flush=True)
                drop_version(client, name)
    ray.shutdown()
    median = {label: statistics.median(v) for label, v in rates.items()}
    print("\n| path | objects/s (median) | vs raw |\n|---|---:|---:|")
    for label, rate in median.items():
        print(f"| {label} | {rate:.1f} | {rate / median['raw']:.2f} |")
    print(f"\nwriter / raw batch import = {median['writer'] / median['raw']:.2f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
