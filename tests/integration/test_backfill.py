"""Versioned collections: zero-downtime backfill behind the alias, and one writer per index."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows.backfill import BackfillRejected, backfill_flow
from flows.ingest import IndexConfigChanged, ingest_flow
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from infra.weaviate.lease import LEASE_COLLECTION, WriteLeaseHeld, lease_id, write_lease
from schemas.collection import resolve_target, versions
from tasks.verify import audit_index
from tests.conftest import make_config, write_corpus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class QueryLoop(threading.Thread):
    """A consumer querying the alias (BM25 and vector) as fast as it can, recording what it saw."""

    def __init__(self, endpoint: WeaviateEndpoint, alias: str, vector: list[float]) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.alias, self.vector = endpoint, alias, vector
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.empty = 0
        self.hashes: list[str] = []  # config_hash of each answer's top hit, in order

    def run(self) -> None:
        with weaviate_client(self.endpoint) as client:
            coll = client.collections.use(self.alias)
            while not self.stop.is_set():
                try:
                    for res in (coll.query.bm25("Stanley Cup", limit=3, return_properties=["config_hash"]),
                                coll.query.near_vector(self.vector, limit=3, return_properties=["config_hash"])):
                        if not res.objects:
                            self.empty += 1
                        else:
                            self.hashes.append(str(res.objects[0].properties["config_hash"]))
                except Exception as exc:  # every failure a consumer would see is recorded
                    self.errors.append(repr(exc))


def test_backfill_switches_the_alias_without_downtime(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)
    reports = tmp_path / "reports"
    old = make_config(tmp_path, weaviate_endpoint, index={"collection": "Backfilled"},
                      runs={"report_dir": str(reports)})
    first = ingest_flow(str(root), old)
    assert first.target == "Backfilled_v1" and first.documents_added == 5

    new = make_config(tmp_path, weaviate_endpoint, chunk={"size_tokens": 40, "overlap_tokens": 4},
                      index={"collection": "Backfilled"}, runs={"report_dir": str(reports)})
    with pytest.raises(IndexConfigChanged, match="headwater backfill"):
        ingest_flow(str(root), new)  # never a mixed index

    with weaviate_client(weaviate_endpoint) as client:
        vector = client.collections.use("Backfilled").query.fetch_objects(
            limit=1, include_vector=True).objects[0].vector["default"]
    consumer = QueryLoop(weaviate_endpoint, "Backfilled", vector)
    consumer.start()
    try:
        time.sleep(1.0)
        report = backfill_flow(None, new)  # sources: the folders the live version came from
        time.sleep(1.0)
    finally:
        consumer.stop.set()
        consumer.join(timeout=30)

    assert (report.previous, report.target, report.switched) == ("Backfilled_v1", "Backfilled_v2", True)
    assert report.build.sources == [str(root.resolve())] and report.build.documents_added == 5
    assert report.checks["audit_clean"] and report.checks["smoke_vector_self_hit"]
    assert consumer.errors == [] and consumer.empty == 0
    old_hash, new_hash = old.semantic_hash(), new.semantic_hash()
    switch = consumer.hashes.index(new_hash)
    assert switch > 0 and set(consumer.hashes[:switch]) == {old_hash}, "answers before the switch: old version"
    assert set(consumer.hashes[switch:]) == {new_hash}, "after the switch: only the new version, never mixed"

    with weaviate_client(weaviate_endpoint) as client:
        assert resolve_target(client, "Backfilled") == "Backfilled_v2"
        assert set(versions(client, "Backfilled")) == {1, 2}  # keep_versions=1 keeps the previous one
        assert audit_index(client, "Backfilled").clean
    again = ingest_flow(str(root), new)  # incremental runs now write the new version
    assert again.target == "Backfilled_v2" and again.documents_unchanged == 5 and again.chunks_embedded == 0
    saved = json.loads(sorted(reports.glob("backfill-Backfilled-*.json"))[-1].read_text())
    assert saved["target"] == "Backfilled_v2" and saved["switched"] is True

    third = backfill_flow([str(root)], new)
    assert third.target == "Backfilled_v3" and third.dropped == ["Backfilled_v1"]


def test_backfill_of_an_empty_source_is_rejected_and_the_alias_stays(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "Rejected"})
    ingest_flow(str(root), config)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackfillRejected, match="empty"):
        backfill_flow([str(empty)], config)
    with weaviate_client(weaviate_endpoint) as client:
        assert resolve_target(client, "Rejected") == "Rejected_v1"
        assert set(versions(client, "Rejected")) == {1}  # the failed build was dropped


def test_a_held_lease_refuses_or_delays_a_second_writer(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "Leased"})
    with write_lease(weaviate_endpoint, "Leased", "backfill"), \
            pytest.raises(WriteLeaseHeld, match="being written by backfill run"):
        ingest_flow(str(root), config)
    with weaviate_client(weaviate_endpoint) as client:
        assert resolve_target(client, "Leased") is None  # refused before anything was created

    waiting = make_config(tmp_path, weaviate_endpoint, index={"collection": "Leased", "lease_wait_s": 60})
    held = threading.Event()

    def hold_briefly() -> None:
        with write_lease(weaviate_endpoint, "Leased", "test"):
            held.set()
            time.sleep(4)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    held.wait(30)
    started = time.monotonic()
    report = ingest_flow(str(root), waiting)
    holder.join()
    assert report.documents_added == 5 and time.monotonic() - started > 3  # it waited, then ran

    # A lease left by a killed run (its process is gone) is taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = dt.datetime.now(dt.UTC)
    with weaviate_client(weaviate_endpoint) as client:
        client.collections.use(LEASE_COLLECTION).data.insert(
            {"alias": "Leased", "holder": "killed", "host": os.uname().nodename, "pid": dead.pid,
             "purpose": "ingest", "acquired_at": now, "renewed_at": now}, uuid=lease_id("Leased"))
    assert ingest_flow(str(root), config).documents_unchanged == 5


def test_two_cli_ingests_never_interleave(tmp_path: Path, weaviate_endpoint: WeaviateEndpoint) -> None:
    """Real processes: while one ingest runs, a second is refused and a third waits for its turn."""
    root = tmp_path / "corpus"
    write_corpus(root)
    env = {"HEADWATER_RUNS__REPORT_DIR": str(tmp_path / "reports")}
    first = _start(root, "Concurrent", weaviate_endpoint, env)
    with weaviate_client(weaviate_endpoint) as client:
        deadline = time.monotonic() + 120
        while not _lease_held(client, "Concurrent"):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lease"
            time.sleep(0.2)
    refused = _start(root, "Concurrent", weaviate_endpoint, env)
    waiting = _start(root, "Concurrent", weaviate_endpoint, {**env, "HEADWATER_INDEX__LEASE_WAIT_S": "600"})
    outputs = [p.communicate(timeout=600)[0] for p in (first, refused, waiting)]
    assert first.returncode == 0, outputs[0]
    assert refused.returncode == 1 and "is being written by ingest run" in outputs[1], outputs[1]
    assert waiting.returncode == 0, outputs[2]
    assert _table_value(outputs[2], "documents unchanged") == 5  # it ran after the first, never alongside
    assert _table_value(outputs[2], "objects written") == 0
    with weaviate_client(weaviate_endpoint) as client:
        assert audit_index(client, "Concurrent").clean


def _start(root: Path, collection: str, endpoint: WeaviateEndpoint, extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HEADWATER_WEAVIATE_URL": endpoint.url,
           "HEADWATER_WEAVIATE_GRPC_URL": f"{endpoint.grpc_host}:{endpoint.grpc_port}",
           "HEADWATER_CHUNK__SIZE_TOKENS": "64", "HEADWATER_CHUNK__OVERLAP_TOKENS": "8",
           "HEADWATER_RAY__INCLUDE_DASHBOARD": "false", "HEADWATER_RAY__NUM_CPUS": "1", "COLUMNS": "200", **extra}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", str(root), "--collection", collection],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lease_held(client: object, alias: str) -> bool:
    if not client.collections.exists(LEASE_COLLECTION):  # type: ignore[attr-defined]
        return False
    return client.collections.use(LEASE_COLLECTION).query.fetch_object_by_id(lease_id(alias)) is not None  # type: ignore[attr-defined]


def _table_value(output: str, label: str) -> int:
    line = next(line for line in output.splitlines() if label in line)
    return int(line.replace("│", " ").split()[-1])
