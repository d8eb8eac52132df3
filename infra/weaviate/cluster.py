"""A multi-node Weaviate cluster on loopback: N real ``weaviate-server`` processes on one machine.

What a replicated deployment (``infra/weaviate/helm-values.yaml``, ``docker-compose.cluster.yml``) runs
across hosts, here on distinct ports: memberlist gossip joins the nodes, Raft (bootstrap expecting N
voters) holds the schema, and each node keeps its own data dir. A node can be stopped and started again
with the same name, ports and data, which is how tests take one down mid-ingest.

    python -m infra.weaviate.cluster /tmp/hw-cluster --nodes 3     # start, print endpoints, wait for ^C
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from infra.weaviate.server import HOST, _alive

_KEEP_ENV = {"PATH", "HOME", "TMPDIR", "GOMEMLIMIT", "LANG"}


class ClusterError(RuntimeError):
    """A node did not start, or the cluster did not form; the message carries the node's log tail."""


@dataclass(frozen=True)
class NodePorts:
    """One node's ports. Weaviate reaches a peer's data port at gossip + 1 and its Raft RPC port at
    raft + 1, so those come in pairs."""

    http: int
    grpc: int
    gossip: int
    data: int
    raft: int
    raft_rpc: int
    profiling: int


@dataclass
class _Node:
    name: str
    ports: NodePorts
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "weaviate.log"


class LocalCluster:
    """Start, stop and restart the nodes of a loopback cluster rooted at ``root`` (one folder per node).

    Use as a context manager: every node still running is stopped on exit, whatever happened.
    """

    def __init__(self, root: Path, binary: Path, nodes: int = 3, api_key: str | None = None,
                 startup_timeout_s: float = 120.0, extra_env: dict[str, str] | None = None) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.root = root
        self.binary = binary
        self.api_key = api_key
        self.startup_timeout_s = startup_timeout_s
        self.extra_env = extra_env or {}
        root.mkdir(parents=True, exist_ok=True)
        self.nodes = [_Node(f"node{i + 1}", ports, root / f"node{i + 1}") for i, ports in enumerate(self._ports(nodes))]

    # --- addresses ----------------------------------------------------------------------------

    def http_url(self, index: int = 0) -> str:
        return f"http://{HOST}:{self.nodes[index].ports.http}"

    def grpc_address(self, index: int = 0) -> str:
        return f"{HOST}:{self.nodes[index].ports.grpc}"

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node together (Raft waits for all of them to bootstrap), then wait until each is
        ready and sees all the others.

        Raises:
            ClusterError: a node exited, or the cluster did not form within the start-up timeout.
        """
        if not self.binary.is_file():
            raise ClusterError(f"no weaviate-server binary at {self.binary}: run `headwater weaviate install`")
        for index in range(len(self.nodes)):
            self._spawn(index)
        for index in range(len(self.nodes)):
            self._wait_ready(index)
        self.wait_healthy(len(self.nodes))

    def stop_node(self, index: int, timeout_s: float = 30.0) -> None:
        """Stop one node gracefully (SIGTERM, SIGKILL after ``timeout_s``); its data stays."""
        node = self.nodes[index]
        if node.proc is None or node.proc.poll() is not None:
            return
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()

    def start_node(self, index: int) -> None:
        """Start one stopped node again with its name, ports and data; returns once it is ready."""
        self._spawn(index)
        self._wait_ready(index)

    def stop(self) -> None:
        for index in reversed(range(len(self.nodes))):
            self.stop_node(index)

    def running(self, index: int) -> bool:
        proc = self.nodes[index].proc
        return proc is not None and proc.poll() is None and _alive(proc.pid)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- health -------------------------------------------------------------------------------

    def healthy_nodes(self, index: int = 0) -> list[str]:
        """Names of the nodes that node ``index`` reports HEALTHY (empty when it does not answer)."""
        try:
            resp = httpx.get(f"{self.http_url(index)}/v1/nodes", headers=self._headers(), timeout=5)
            resp.raise_for_status()
        except httpx.HTTPError:
            return []
        return sorted(n["name"] for n in resp.json().get("nodes", []) if n.get("status") == "HEALTHY")

    def wait_healthy(self, count: int, timeout_s: float | None = None) -> None:
        """Wait until some running node reports ``count`` healthy nodes."""
        deadline = time.monotonic() + (timeout_s or self.startup_timeout_s)
        while time.monotonic() < deadline:
            if any(len(self.healthy_nodes(i)) >= count for i in range(len(self.nodes)) if self.running(i)):
                return
            time.sleep(0.5)
        raise ClusterError(f"the cluster did not reach {count} healthy nodes; last log lines:\n{self.tail_logs()}")

    def tail_logs(self, lines: int = 8) -> str:
        parts = []
        for node in self.nodes:
            try:
                tail = node.log_file.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = ["(no log)"]
            parts.append(f"--- {node.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # --- internals ----------------------------------------------------------------------------

    def _ports(self, count: int) -> list[NodePorts]:
        """Ports kept from an earlier start of this root (a restarted cluster keeps its Raft
        addresses), else newly chosen."""
        saved = self.root / "cluster-ports.json"
        try:
            ports = [NodePorts(**p) for p in json.loads(saved.read_text())]
            if len(ports) == count:
                return ports
        except (OSError, ValueError, TypeError):
            pass
        ports = _choose_ports(count)
        saved.write_text(json.dumps([asdict(p) for p in ports]))
        return ports

    def _spawn(self, index: int) -> None:
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            return
        node.data_dir.mkdir(parents=True, exist_ok=True)
        with open(node.log_file, "ab") as log:
            node.proc = subprocess.Popen(
                [str(self.binary), "--host", HOST, "--port", str(node.ports.http), "--scheme", "http"],
                env=self._env(node), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=node.data_dir, start_new_session=True,
            )

    def _env(self, node: _Node) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in _KEEP_ENV}
        p = node.ports
        env = {
            **keep,
            "PERSISTENCE_DATA_PATH": str(node.data_dir / "data"),
            "CLUSTER_HOSTNAME": node.name,
            "CLUSTER_IN_LOCALHOST": "true",
            "CLUSTER_BIND_ADDR": HOST,
            "CLUSTER_ADVERTISE_ADDR": HOST,
            "CLUSTER_GOSSIP_BIND_PORT": str(p.gossip),
            "CLUSTER_DATA_BIND_PORT": str(p.data),
            # Every node lists every gossip address, as a Kubernetes headless service would: a node that
            # restarts joins whichever peers are up.
            "CLUSTER_JOIN": ",".join(f"{HOST}:{n.ports.gossip}" for n in self.nodes if n is not node),
            "RAFT_PORT": str(p.raft),
            "RAFT_INTERNAL_RPC_PORT": str(p.raft_rpc),
            "RAFT_JOIN": ",".join(f"{n.name}:{n.ports.raft}" for n in self.nodes),
            "RAFT_BOOTSTRAP_EXPECT": str(len(self.nodes)),
            "GRPC_PORT": str(p.grpc),
            "GO_PROFILING_PORT": str(p.profiling),
            "PROMETHEUS_MONITORING_ENABLED": "false",
            "DISABLE_TELEMETRY": "true",
            "AUTOSCHEMA_ENABLED": "false",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "ENABLE_MODULES": "",
            "QUERY_DEFAULTS_LIMIT": "25",
            "LOG_LEVEL": "warning",
        }
        if self.api_key:
            env |= {"AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false", "AUTHENTICATION_APIKEY_ENABLED": "true",
                    "AUTHENTICATION_APIKEY_ALLOWED_KEYS": self.api_key, "AUTHENTICATION_APIKEY_USERS": "headwater"}
        else:
            env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] = "true"
        return env | self.extra_env

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _wait_ready(self, index: int) -> None:
        node = self.nodes[index]
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.http_url(index)}/v1/.well-known/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if node.proc is not None and node.proc.poll() is not None:
                raise ClusterError(f"{node.name} exited with {node.proc.returncode}:\n{self.tail_logs()}")
            time.sleep(0.25)
        raise ClusterError(f"{node.name} not ready after {self.startup_timeout_s:.0f}s:\n{self.tail_logs()}")


def _choose_ports(count: int) -> list[NodePorts]:
    """Distinct free ports for ``count`` nodes, the gossip/data and Raft/RPC ones as consecutive pairs."""
    taken: set[int] = set()

    def single() -> int:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("", 0))
                port = sock.getsockname()[1]
            if port not in taken:
                taken.add(port)
                return port

    def pair() -> int:
        while True:
            base = single()
            if base + 1 not in taken and base + 1 < 65536 and _free(base + 1):
                taken.add(base + 1)
                return base

    result = []
    for _ in range(count):
        gossip, raft = pair(), pair()
        result.append(NodePorts(http=single(), grpc=single(), gossip=gossip, data=gossip + 1, raft=raft,
                                raft_rpc=raft + 1, profiling=single()))
    return result


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def main() -> None:
    import argparse

    from infra.weaviate.install import binary_path
    from schemas.config import WEAVIATE_VERSION

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    with LocalCluster(args.root, binary_path(WEAVIATE_VERSION), args.nodes) as cluster:
        for i, node in enumerate(cluster.nodes):
            print(f"{node.name}: HEADWATER_WEAVIATE_URL={cluster.http_url(i)} "
                  f"HEADWATER_WEAVIATE_GRPC_URL={cluster.grpc_address(i)}")
        print("healthy:", ", ".join(cluster.healthy_nodes()), "- Ctrl-C stops the cluster")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
