"""A real multi-node run on one machine: a 3-node Weaviate cluster on loopback (Raft, replication factor 3)
and a 2-node Ray cluster (`ray start --head` + `ray start --address`). `headwater ingest` runs across both,
unchanged; one Weaviate node is stopped while it writes, queries keep being answered, the node returns, and
the index converges to a clean `verify`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from infra.weaviate.cluster import LocalCluster
from infra.weaviate.connection import WeaviateEndpoint, remote_endpoint, weaviate_client
from schemas.collection import LEASE_COLLECTION, resolve_target
from schemas.config import EmbedModelConfig, EmbedRuntimeConfig, WeaviateConfig
from tasks.embed import Embedder
from tasks.index import count_objects
from tasks.search import search
from tasks.verify import verify_index

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ALIAS = "ClusterRun"
DOCS = 60
TOPICS = ("glacier", "volcano", "sourdough", "hockey", "river delta", "lighthouse", "beekeeping", "comet",
          "orchard", "telescope", "coral reef", "windmill")


def write_docs(root: Path) -> None:
    """DOCS small markdown files, a few chunks each, on a dozen topics (distinct text: distinct chunks)."""
    root.mkdir(parents=True)
    for i in range(DOCS):
        topic = TOPICS[i % len(TOPICS)]
        paragraphs = [f"Field note {i} on the {topic}, paragraph {p}. " + " ".join(
            f"The {topic} observation {i}-{p}-{s} records how the {topic} changed with season {s}." for s in range(6))
            for p in range(3)]
        (root / f"note-{i:03d}.md").write_text(f"# The {topic}, note {i}\n\n" + "\n\n".join(paragraphs) + "\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayTwoNodes:
    """A head and a worker node, 1 CPU each, on free ports in a private temp dir. Stopped by killing the
    processes of this cluster only (those naming its temp dir or GCS address): `ray stop` would stop
    every Ray of the user on the machine."""

    WORKER_PORTS = 200  # each node's range of worker ports

    def __init__(self) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="hwray", dir="/tmp"))  # short: Ray's socket paths
        # Worker port ranges first, then every single port outside them: Ray refuses to start when one of
        # its components' ports falls in a node's worker range.
        self.ranges: list[range] = []
        for _ in range(2):
            while True:
                low = _free_port()
                span = range(low, low + self.WORKER_PORTS + 1)
                if span.stop < 65536 and not any(r.start < span.stop and span.start < r.stop for r in self.ranges):
                    self.ranges.append(span)
                    break
        self.port = self._port()
        self.address = f"127.0.0.1:{self.port}"
        self.ray = str(Path(sys.executable).parent / "ray")
        # Token auth off, explicitly: a head turns it on by itself when ~/.ray/auth_token exists, and the
        # worker and the driver must then agree. (On a real cluster, use RAY_AUTH_MODE=token.)
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)

    def _port(self) -> int:
        """A free port in none of the worker ranges."""
        while True:
            port = _free_port()
            if not any(port in r for r in self.ranges):
                return port

    def _ports(self, node: int) -> list[str]:
        workers = self.ranges[node]
        return ["--node-manager-port", str(self._port()), "--object-manager-port", str(self._port()),
                "--dashboard-agent-listen-port", str(self._port()), "--dashboard-agent-grpc-port",
                str(self._port()), "--runtime-env-agent-port", str(self._port()), "--metrics-export-port",
                str(self._port()), "--min-worker-port", str(workers.start), "--max-worker-port", str(workers.stop - 1)]

    def start(self) -> None:
        common = ["--num-cpus", "1", "--temp-dir", str(self.temp_dir), "--object-store-memory", str(300 << 20),
                  "--disable-usage-stats"]
        head = [self.ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                "--include-dashboard", "false", "--ray-client-server-port", str(self._port()), *common]
        worker = [self.ray, "start", "--address", self.address, "--node-ip-address", "127.0.0.1", *common]
        for cmd in (head + self._ports(0), worker + self._ports(1)):
            done = subprocess.run(cmd, env=self.env, timeout=120, capture_output=True, text=True)
            assert done.returncode == 0, f"{' '.join(cmd[:3])} failed:\n{(done.stdout + done.stderr)[-2000:]}"

    def alive_nodes(self) -> int:
        code = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
        out = subprocess.run([sys.executable, "-c", code % self.address], env=self.env, capture_output=True,
                             text=True, timeout=120, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        marks = (str(self.temp_dir), self.address)
        mine = [p for p in psutil.process_iter(["cmdline"])
                if any(m in " ".join(p.info["cmdline"] or ()) for m in marks) and p.pid != os.getpid()]
        for proc in mine:
            with _gone():
                proc.send_signal(signal.SIGTERM)
        _, left = psutil.wait_procs(mine, timeout=10)
        for proc in left:
            with _gone():
                proc.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class _gone:
    """The process may have exited meanwhile."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_rest: object) -> bool:
        return kind is not None and issubclass(kind, psutil.NoSuchProcess | psutil.AccessDenied)


@pytest.fixture
def weaviate_cluster(weaviate_binary: Path, tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "weaviate", weaviate_binary, nodes=3,
                           extra_env={"ASYNC_REPLICATION_FREQUENCY": "5s"})
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ray_cluster() -> Iterator[RayTwoNodes]:
    ray = RayTwoNodes()
    try:
        ray.start()
        yield ray
    finally:
        ray.stop()


def _endpoint(cluster: LocalCluster, node: int) -> WeaviateEndpoint:
    return remote_endpoint(WeaviateConfig(url=cluster.http_url(node), grpc_url=cluster.grpc_address(node)))


def _start_ingest(root: Path, cluster: LocalCluster, ray: RayTwoNodes) -> tuple[subprocess.Popen[bytes], Path]:
    """`headwater ingest` as a user runs it against the clusters: addresses in the environment. Its
    output goes to a file (a pipe nobody reads while it runs would fill and block it)."""
    env = {**ray.env, "RAY_ADDRESS": ray.address,
           "HEADWATER_WEAVIATE_URL": cluster.http_url(0), "HEADWATER_WEAVIATE_GRPC_URL": cluster.grpc_address(0),
           "HEADWATER_COLLECTION__REPLICATION_FACTOR": "3", "HEADWATER_COLLECTION__SHARDS": "3",
           "HEADWATER_CHUNK__SIZE_TOKENS": "64", "HEADWATER_CHUNK__OVERLAP_TOKENS": "8",
           # small batches, one at a time: the writes spread over the run, so a node can die halfway
           "HEADWATER_INDEX__BATCH_SIZE": "4", "HEADWATER_INDEX__CONCURRENT_REQUESTS": "1",
           "HEADWATER_INDEX__WRITE_TASKS": "1",
           "HEADWATER_RUNS__REPORT_DIR": str(root.parent / "reports")}
    env.pop("HEADWATER_CONFIG", None)
    log = root.parent / f"ingest-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", str(root), "--collection", ALIAS],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _finish(run: tuple[subprocess.Popen[bytes], Path], timeout_s: float) -> tuple[int, str]:
    proc, log = run
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"ingest did not finish in {timeout_s:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")
    return proc.returncode, log.read_text(errors="replace")


def _query_while(running: Callable[[], bool], clients: tuple[object, ...], embedder: Embedder,
                 at_least_s: float = 5.0, at_most_s: float = 300.0) -> tuple[int, list[str], float]:
    """BM25, vector and hybrid queries through each client while ``running()`` (and ``at_least_s``);
    returns the queries answered with hits, the failures, and the seconds it queried."""
    answered, failures, start = 0, [], time.monotonic()
    while (running() or time.monotonic() - start < at_least_s) and time.monotonic() - start < at_most_s:
        for client in clients:
            for mode, query in (("bm25", "glacier season"), ("vector", "volcano eruption notes"),
                                ("hybrid", "sourdough observation")):
                try:
                    answered += bool(search(client, ALIAS, query, mode, 3, embedder))  # type: ignore[arg-type]
                except Exception as exc:  # any failure is what this test counts
                    failures.append(f"{mode}: {exc}")
        time.sleep(0.3)
    return answered, failures, time.monotonic() - start


def test_ingest_across_ray_and_weaviate_clusters_survives_a_node_down(
    tmp_path: Path, weaviate_cluster: LocalCluster, ray_cluster: RayTwoNodes,
) -> None:
    cluster, root = weaviate_cluster, tmp_path / "corpus"
    write_docs(root)
    assert cluster.healthy_nodes(0) == ["node1", "node2", "node3"]
    assert ray_cluster.alive_nodes() == 2
    node1, node2 = _endpoint(cluster, 0), _endpoint(cluster, 1)
    embedder = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(device="cpu"))
    run = _start_ingest(root, cluster, ray_cluster)
    proc = run[0]
    with weaviate_client(node1) as client1, weaviate_client(node2) as client2:
        deadline = time.monotonic() + 240
        target = None
        while (target is None or count_objects(client2, target) == 0) and proc.poll() is None:
            assert time.monotonic() < deadline, "no object was written in 240 s"
            target = resolve_target(client2, ALIAS)
            time.sleep(0.1)
        assert target is not None, "the ingest created no collection"
        # The ingest laid out what it created from HEADWATER_COLLECTION__*: chunks, and the lease
        # collection too (one node down must not stop writers).
        for name in (target, LEASE_COLLECTION):
            assert client1.collections.use(name).config.get().replication_config.factor == 3, name
        written_before_stop = count_objects(client2, target)
        cluster.stop_node(2)
        stopped_mid_ingest = proc.poll() is None
        answered, failures, during = _query_while(lambda: proc.poll() is None, (client1, client2), embedder)
    rc_first, out_first = _finish(run, 60)
    print(f"objects before node3 stopped: {written_before_stop}; ingest still running then: {stopped_mid_ingest}; "
          f"queries answered while node3 was down: {answered} in {during:.0f} s; failed: {len(failures)}; "
          f"first ingest rc {rc_first}, last lines:\n{out_first[-1500:]}")
    assert stopped_mid_ingest, "the ingest finished before node3 could be stopped: make the corpus larger"
    assert answered >= 3 and not failures, failures[:3]

    cluster.start_node(2)
    cluster.wait_healthy(3)
    rc, out = _finish(_start_ingest(root, cluster, ray_cluster), 300)  # a no-op, or the rest of a failed run
    assert rc == 0, out[-3000:]

    with weaviate_client(node1) as client:
        result = verify_index(client, resolve_target(client, ALIAS) or ALIAS)
        audit = result.final
        print(f"verify: {audit.rows()}")
        assert audit.clean, audit.rows()
        assert audit.ledger_sources == DOCS and audit.index_objects == audit.expected_chunks > DOCS
    # The node that was down answers from its own replicas, which async replication repairs in the
    # background (Weaviate compares hash trees between replicas, here every 5 s).
    back, caught_up = time.monotonic(), 0
    with weaviate_client(_endpoint(cluster, 2)) as client:
        while caught_up != audit.expected_chunks:
            assert time.monotonic() - back < 180, f"node3 serves {caught_up} of {audit.expected_chunks} chunks"
            time.sleep(2)
            caught_up = sum(1 for _ in client.collections.use(target).iterator())
        print(f"node3 serves all {caught_up} chunks {time.monotonic() - back:.0f} s after verify")
        assert search(client, ALIAS, "comet", "bm25", 1)
