"""Faults against real processes: Weaviate unreachable, Weaviate killed mid-upsert, a Ray worker killed.

Each ends the way an operator would check it: a rerun converges and the ledger/index audit is clean.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from infra.weaviate.server import HOST, EmbeddedWeaviate
from schemas.collection import resolve_target
from schemas.config import WEAVIATE_VERSION
from tasks.index import count_objects
from tasks.ledger import read_ledger
from tasks.verify import audit_index
from tests import adversarial
from tests.conftest import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def cli_env(endpoint: WeaviateEndpoint, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HEADWATER_WEAVIATE_URL": endpoint.url,
           "HEADWATER_WEAVIATE_GRPC_URL": f"{endpoint.grpc_host}:{endpoint.grpc_port}",
           "HEADWATER_CHUNK__SIZE_TOKENS": "64", "HEADWATER_CHUNK__OVERLAP_TOKENS": "8",
           "HEADWATER_RAY__INCLUDE_DASHBOARD": "false", "HEADWATER_RUNS__REPORT_DIR": str(tmp_path / "reports"),
           "COLUMNS": "200", **extra}
    env.pop("RAY_ADDRESS", None)  # its own local Ray, like a user's CLI run
    return env


def start_ingest(root: Path, collection: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", str(root), "--collection", collection],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_ingest(root: Path, collection: str, env: dict[str, str], log: Path, timeout: float = 400) -> tuple[int, str]:
    rc = wait_ingest(start_ingest(root, collection, env, log), timeout)
    return rc, log.read_text(errors="replace")


def wait_ingest(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The ingest's exit status; past ``timeout`` it is killed (with its Ray) and the test fails."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def endpoint_of(server: EmbeddedWeaviate) -> WeaviateEndpoint:
    state = server.running()
    assert state is not None
    return WeaviateEndpoint(HOST, state.ports["http"], False, HOST, state.ports["grpc"], False)


def wait_for_first_objects(endpoint: WeaviateEndpoint, alias: str, proc: subprocess.Popen[bytes], log: Path,
                           timeout: float = 300) -> None:
    """Return once the running ingest has written its first chunks (the upsert is under way)."""
    deadline, written = time.monotonic() + timeout, 0
    with weaviate_client(endpoint) as client:
        while written == 0:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no object was ever written"
            target = resolve_target(client, alias)
            written = count_objects(client, target) if target else 0
            time.sleep(0.2)


def assert_converged(endpoint: WeaviateEndpoint, alias: str, documents: int) -> None:
    with weaviate_client(endpoint) as client:
        target = resolve_target(client, alias)
        assert target is not None
        audit = audit_index(client, target)
        assert audit.clean, audit.rows()
        ledger = read_ledger(client, target)
        assert len(ledger) == documents
        # No lost and no duplicated chunks: the index holds exactly the ledger's chunks.
        assert count_objects(client, target) == sum(len(e.chunk_ids) for e in ledger.values())


def test_unreachable_weaviate_is_a_clear_error_with_nothing_written(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    endpoint = WeaviateEndpoint(HOST, port, False, HOST, port + 1 if port < 65535 else port - 1, False)
    write_corpus(tmp_path / "corpus")
    started = time.monotonic()
    rc, output = run_ingest(tmp_path / "corpus", "Unreachable", cli_env(endpoint, tmp_path), tmp_path / "cli.log")
    assert rc == 1, output
    assert f"ingest failed: cannot reach Weaviate at http://{HOST}:{port}" in output
    assert "Traceback" not in output
    assert time.monotonic() - started < 120
    assert not (tmp_path / "reports").exists()  # the run never started


@dataclass
class UpsertUnderWay:
    server: EmbeddedWeaviate
    endpoint: WeaviateEndpoint
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def upsert_under_way(tmp_path: Path, weaviate_binary: Path, alias: str) -> Iterator[UpsertUnderWay]:
    """A Weaviate of its own, and a `headwater ingest` of 160 documents that has written its first chunks."""
    server = EmbeddedWeaviate(tmp_path / "weaviate", weaviate_binary, WEAVIATE_VERSION)
    server.start()
    try:
        endpoint = endpoint_of(server)
        root = tmp_path / "corpus"
        adversarial.write_good(root, 160)
        # small batches, one write task at a time: the writes spread over the run, so a kill lands mid-upsert
        env = {**cli_env(endpoint, tmp_path), "HEADWATER_INDEX__BATCH_SIZE": "8", "HEADWATER_INDEX__WRITE_TASKS": "1"}
        log = tmp_path / "first.log"
        proc = start_ingest(root, alias, env, log)
        wait_for_first_objects(endpoint, alias, proc, log)
        yield UpsertUnderWay(server, endpoint, root, env, proc, log)
    finally:
        server.stop()


def test_weaviate_killed_during_upsert_then_the_rerun_converges(tmp_path: Path, weaviate_binary: Path) -> None:
    with upsert_under_way(tmp_path, weaviate_binary, "Killed") as run:
        server, endpoint, root, env = run.server, run.endpoint, run.root, run.env
        state = server.running()
        assert state is not None
        os.kill(state.pid, signal.SIGKILL)  # mid-upsert: the first objects are in, most are not
        time.sleep(5)
        server.start()  # same data dir, same ports
        rc = wait_ingest(run.proc, 400)
        output = run.log.read_text(errors="replace")
        # Bounded retries with backoff: either they outlasted the outage, or the run failed clearly.
        assert rc == 0 or (rc == 1 and "ingest failed" in output), output

        rc, output = run_ingest(root, "Killed", env, tmp_path / "second.log")
        assert rc == 0, output
        assert_converged(endpoint, "Killed", 160)

        # Weaviate down at the start of a run: a clear error, and the ledger is exactly as it was.
        with weaviate_client(endpoint) as client:
            before = read_ledger(client, resolve_target(client, "Killed") or "")
        server.stop()
        (root / "good-00000.md").write_text("# Edited\n\nThe harbour was dredged in spring.\n")
        rc, output = run_ingest(root, "Killed", env, tmp_path / "third.log")
        assert rc == 1 and f"cannot reach Weaviate at {endpoint.url}" in output, output
        server.start()
        with weaviate_client(endpoint) as client:
            assert read_ledger(client, resolve_target(client, "Killed") or "") == before
        assert_converged(endpoint, "Killed", 160)


def test_weaviate_down_for_good_fails_clearly_within_bounds(tmp_path: Path, weaviate_binary: Path) -> None:
    with upsert_under_way(tmp_path, weaviate_binary, "Gone") as run:
        run.server.stop(timeout_s=0)  # killed at once (SIGTERM then SIGKILL), and it stays down
        killed_at = time.monotonic()
        rc = wait_ingest(run.proc, 600)
        waited = time.monotonic() - killed_at
        output = run.log.read_text(errors="replace")
        verdict = [line for line in output.splitlines() if line.startswith("ingest failed:")]
        assert rc == 1 and verdict, output[-3000:]
        assert "Weaviate" in verdict[-1], verdict  # says what went away, in one line
        assert waited < 420, f"gave up only after {waited:.0f} s"
        print(f"failed {waited:.0f} s after Weaviate was killed: {verdict[-1]}")

        run.server.start()
        rc, output = run_ingest(run.root, "Gone", run.env, tmp_path / "second.log")
        assert rc == 0, output
        assert_converged(run.endpoint, "Gone", 160)


@pytest.mark.parametrize("point", ["parse", "embed"])
def test_a_killed_ray_worker_is_retried(point: str, tmp_path: Path, weaviate_endpoint: WeaviateEndpoint) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)
    adversarial.write_good(root / "more", 12)
    marker = tmp_path / "killed.pid"
    env = cli_env(weaviate_endpoint, tmp_path, HEADWATER_KILL_WORKER_AT=point,
                  HEADWATER_KILL_WORKER_MARKER=str(marker))
    collection = f"WorkerKilled{point.title()}"
    rc, output = run_ingest(root, collection, env, tmp_path / "cli.log")
    assert rc == 0, output
    assert marker.is_file(), "no worker reached the kill point"
    killed = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # that worker is really gone
    assert_converged(weaviate_endpoint, collection, 5 + 12)
