"""The embedded Weaviate: the real server binary on loopback with a persistent data dir.

Like the Weaviate client's embedded mode, but with every port (HTTP, gRPC, gossip, data,
Raft, Raft RPC, profiling) chosen free on first start and kept in the data dir, so two data
dirs never collide and a restart keeps its Raft address. ``CLUSTER_HOSTNAME`` is fixed so
the node keeps its identity across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
NODE_NAME = "headwater-node"
_PORT_NAMES = ("http", "grpc", "gossip", "data", "raft", "raft_rpc", "profiling")


class ServerError(RuntimeError):
    """The embedded server could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class ServerState:
    pid: int
    ports: dict[str, int]
    version: str

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.ports['http']}"


class EmbeddedWeaviate:
    """Start, find and stop the server that owns ``data_dir``."""

    def __init__(self, data_dir: Path, binary: Path, version: str, startup_timeout_s: float = 120.0,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_env = dict(extra_env or {})  # e.g. API-key authentication settings
        self.binary = binary
        self.version = version
        self.startup_timeout_s = startup_timeout_s
        self._state_file = data_dir / "headwater-server.json"
        self._ports_file = data_dir / "headwater-ports.json"
        self.log_file = data_dir / "weaviate.log"

    # --- queries ------------------------------------------------------------------------------

    def running(self) -> ServerState | None:
        """The state of a live server on this data dir, or None."""
        try:
            raw = json.loads(self._state_file.read_text())
            state = ServerState(pid=raw["pid"], ports=raw["ports"], version=raw["version"])
        except (OSError, ValueError, KeyError):
            return None
        return state if _alive(state.pid) else None

    def ready(self, state: ServerState) -> bool:
        try:
            resp = httpx.get(f"{state.http_url}/v1/.well-known/ready", timeout=2)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> tuple[ServerState, bool]:
        """Start the server unless one already runs on this data dir.

        Returns:
            The server state, and whether this call started it.

        Raises:
            ServerError: the binary is missing, the process died, or readiness timed out.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            state = self.running()
            if state is not None:
                self._wait_ready(state, None)
                return state, False
            if not self.binary.is_file():
                raise ServerError(f"no weaviate-server binary at {self.binary}: run `headwater weaviate install`")
            ports = self._ports()
            log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
            proc = subprocess.Popen(
                [str(self.binary), "--host", HOST, "--port", str(ports["http"]), "--scheme", "http"],
                env=self._env(ports),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,  # a Ctrl-C meant for the CLI must not kill the index mid-write
            )
            log.close()
            state = ServerState(pid=proc.pid, ports=ports, version=self.version)
            self._state_file.write_text(json.dumps(asdict(state)))
            self._wait_ready(state, proc)
            return state, True

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the server gracefully (SIGTERM, then SIGKILL after ``timeout_s``). False if none ran."""
        with self._lock():
            state = self.running()
            if state is None:
                self._state_file.unlink(missing_ok=True)
                return False
            os.kill(state.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _alive(state.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(state.pid):
                os.kill(state.pid, signal.SIGKILL)
                while _alive(state.pid):
                    time.sleep(0.05)
            self._state_file.unlink(missing_ok=True)
            return True

    # --- internals ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.data_dir / ".headwater.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _ports(self) -> dict[str, int]:
        """This data dir's ports: kept from earlier starts while free, else newly chosen."""
        try:
            ports = json.loads(self._ports_file.read_text())
            if set(ports) == set(_PORT_NAMES) and all(_port_free(p) for p in ports.values()):
                return ports
        except (OSError, ValueError):
            pass
        ports = _free_ports(_PORT_NAMES)
        self._ports_file.write_text(json.dumps(ports))
        return ports

    def _env(self, ports: dict[str, int]) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "TMPDIR", "GOMEMLIMIT", "LANG"}}
        return {
            **keep,
            "PERSISTENCE_DATA_PATH": str(self.data_dir / "data"),
            "CLUSTER_HOSTNAME": NODE_NAME,
            "CLUSTER_BIND_ADDR": HOST,
            "CLUSTER_ADVERTISE_ADDR": HOST,
            "CLUSTER_GOSSIP_BIND_PORT": str(ports["gossip"]),
            "CLUSTER_DATA_BIND_PORT": str(ports["data"]),
            "RAFT_PORT": str(ports["raft"]),
            "RAFT_INTERNAL_RPC_PORT": str(ports["raft_rpc"]),
            "RAFT_JOIN": f"{NODE_NAME}:{ports['raft_rpc']}",
            "RAFT_BOOTSTRAP_EXPECT": "1",
            # A restart whose ports had to move is still the same one-node cluster.
            "RAFT_ENABLE_ONE_NODE_RECOVERY": "true",
            "GRPC_PORT": str(ports["grpc"]),
            "GO_PROFILING_PORT": str(ports["profiling"]),
            "PROMETHEUS_MONITORING_ENABLED": "false",
            "DISABLE_TELEMETRY": "true",
            "AUTOSCHEMA_ENABLED": "false",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "ENABLE_MODULES": "",
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
            "QUERY_DEFAULTS_LIMIT": "25",
            "LOG_LEVEL": "warning",
            **self.extra_env,
        }

    def _wait_ready(self, state: ServerState, proc: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.ready(state):
                return
            if proc is not None and proc.poll() is not None:
                self._state_file.unlink(missing_ok=True)
                raise ServerError(f"weaviate-server exited with {proc.returncode} during start-up; "
                                  f"last log lines:\n{self.tail_log()}")
            time.sleep(0.25)
        raise ServerError(f"weaviate-server (pid {state.pid}) not ready after {self.startup_timeout_s:.0f}s; "
                          f"see {self.log_file}:\n{self.tail_log()}")

    def tail_log(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))  # the server binds some ports on all interfaces
        except OSError:
            return False
    return True


def _free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Distinct free ports, chosen by the kernel (bound together so none repeats)."""
    sockets = []
    try:
        for _ in names:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            sockets.append(sock)
        return {name: sock.getsockname()[1] for name, sock in zip(names, sockets, strict=True)}
    finally:
        for sock in sockets:
            sock.close()
