"""A Weaviate that demands an API key, reached over plain HTTP and over TLS with a private CA.

Ingest and search work with the key, fail clearly without it (or without trusting the CA), and the
key appears nowhere the run leaves text behind: its output, its JSON report, Prefect's database
(flow-run parameters, logs, the markdown artifact), Ray's logs and Weaviate's log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import secrets
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.weaviate.server import HOST, EmbeddedWeaviate
from schemas.config import WEAVIATE_VERSION
from tests.conftest import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "hw-" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def secured(weaviate_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedWeaviate]:
    server = EmbeddedWeaviate(tmp_path_factory.mktemp("secured"), weaviate_binary, WEAVIATE_VERSION, extra_env={
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        "AUTHENTICATION_APIKEY_ALLOWED_KEYS": KEY,
        "AUTHENTICATION_APIKEY_USERS": "headwater",
    })
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run(args: list[str], env: dict[str, str], timeout: float = 400) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def base_env(tmp_path: Path, url: str, grpc: str, ray_tmp: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADWATER_", "PREFECT_", "RAY_ADDRESS"))}
    env.update({"HEADWATER_WEAVIATE_URL": url, "HEADWATER_WEAVIATE_GRPC_URL": grpc,
                "HEADWATER_CHUNK__SIZE_TOKENS": "64", "HEADWATER_CHUNK__OVERLAP_TOKENS": "8",
                "HEADWATER_RAY__INCLUDE_DASHBOARD": "false", "HEADWATER_RUNS__REPORT_DIR": str(tmp_path / "reports"),
                "PREFECT_HOME": str(tmp_path / "prefect"), "RAY_TMPDIR": ray_tmp, "COLUMNS": "200", **extra})
    return env


def files_containing(secret: str, *roots: Path) -> list[str]:
    needle = secret.encode()
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    if needle in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    continue
    return found


def test_api_key_auth_works_fails_clearly_and_never_leaks(tmp_path: Path, secured: EmbeddedWeaviate) -> None:
    state = secured.running()
    assert state is not None
    url, grpc = f"http://{HOST}:{state.ports['http']}", f"{HOST}:{state.ports['grpc']}"
    write_corpus(tmp_path / "corpus")
    ray_tmp = tempfile.mkdtemp(prefix="hwray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = base_env(tmp_path, url, grpc, ray_tmp, HEADWATER_WEAVIATE_API_KEY=KEY)
    outputs = []

    rc, out = run(["ingest", str(tmp_path / "corpus"), "--collection", "Secured"], env)
    outputs.append(out)
    assert rc == 0, out
    rc, out = run(["search", "stanley cup", "--mode", "bm25", "--collection", "Secured"], env)
    outputs.append(out)
    assert rc == 0 and "hockey.md" in out, out

    for key in (None, "hw-wrong-key"):
        bad_env = {k: v for k, v in env.items() if k != "HEADWATER_WEAVIATE_API_KEY"}
        if key:
            bad_env["HEADWATER_WEAVIATE_API_KEY"] = key
        for args in (["ingest", str(tmp_path / "corpus"), "--collection", "Secured"],
                     ["search", "stanley cup", "--collection", "Secured"]):
            rc, out = run(args, bad_env)
            outputs.append(out)
            assert rc == 1 and "refused the credentials (HTTP 401)" in out, out
            assert "Traceback" not in out

    # The run left an artifact and a report, and Ray wrote logs: none of them holds the key.
    db = tmp_path / "prefect" / "prefect.db"
    with sqlite3.connect(db) as conn:
        keys = {row[0] for row in conn.execute("select key from artifact")}
    assert "headwater-ingest-secured" in keys
    assert list((tmp_path / "reports").glob("ingest-Secured-*.json"))
    assert any(Path(ray_tmp).rglob("*.log")), "Ray wrote no logs where expected"
    assert not [o for o in outputs if KEY in o]
    assert files_containing(KEY, tmp_path / "reports", tmp_path / "prefect", Path(ray_tmp), secured.data_dir) == []


# --- TLS: a terminating proxy with a private CA in front of the secured server ---------------------


def make_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Headwater test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class TlsProxy:
    """TLS in front of plain TCP ports (HTTP and gRPC alike: ALPN offers h2 and http/1.1)."""

    def __init__(self, cert: Path, key: Path, upstreams: list[int]) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.upstreams = upstreams
        self.ports: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TlsProxy:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        for upstream in self.upstreams:
            server = self.loop.run_until_complete(asyncio.start_server(
                lambda r, w, up=upstream: self._pipe(r, w, up), HOST, 0, ssl=self.ctx))
            self.ports.append(server.sockets[0].getsockname()[1])
        self.ready.set()
        self.loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: int) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, upstream)
        except OSError:
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


def test_tls_with_a_private_ca(tmp_path: Path, secured: EmbeddedWeaviate) -> None:
    state = secured.running()
    assert state is not None
    ca, cert, key = make_ca_and_cert(tmp_path)
    write_corpus(tmp_path / "corpus")
    ray_tmp = tempfile.mkdtemp(prefix="hwray-", dir="/tmp")
    with TlsProxy(cert, key, [state.ports["http"], state.ports["grpc"]]) as proxy:
        url, grpc = f"https://{HOST}:{proxy.ports[0]}", f"{HOST}:{proxy.ports[1]}"
        env = base_env(tmp_path, url, grpc, ray_tmp, HEADWATER_WEAVIATE_API_KEY=KEY)
        rc, out = run(["search", "anything", "--collection", "Secured"], env)
        assert rc == 1 and "TLS certificate is not trusted" in out and "weaviate.ca_file" in out, out
        env["HEADWATER_WEAVIATE__CA_FILE"] = str(ca)
        rc, out = run(["ingest", str(tmp_path / "corpus"), "--collection", "SecuredTls"], env)
        assert rc == 0, out
        rc, out = run(["search", "stanley cup", "--mode", "hybrid", "--collection", "SecuredTls"], env)
        assert rc == 0 and "hockey.md" in out, out
