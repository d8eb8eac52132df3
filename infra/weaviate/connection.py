"""How Headwater reaches Weaviate: the embedded server, or any other one by URL."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr

from infra.weaviate.install import binary_path
from infra.weaviate.server import HOST, EmbeddedWeaviate
from schemas.config import WeaviateConfig

if TYPE_CHECKING:
    import weaviate


class WeaviateUnavailable(RuntimeError):
    """Weaviate cannot be reached; the message names the address and what to do."""


@dataclass(frozen=True)
class WeaviateEndpoint:
    """Serializable address of a Weaviate (shipped to Ray workers, which connect themselves)."""

    http_host: str
    http_port: int
    http_secure: bool
    grpc_host: str
    grpc_port: int
    grpc_secure: bool
    api_key: SecretStr | None = None
    ca_file: str | None = None  # PEM CA bundle for an https server with a private CA

    @property
    def url(self) -> str:
        return f"{'https' if self.http_secure else 'http'}://{self.http_host}:{self.http_port}"

    def connect(self) -> weaviate.WeaviateClient:
        """A connected client.

        Raises:
            WeaviateUnavailable: the server does not answer or refuses the credentials.
        """
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, GrpcConfig, Timeout
        from weaviate.exceptions import WeaviateBaseError

        auth = Auth.api_key(self.api_key.get_secret_value()) if self.api_key else None
        extra: dict[str, object] = {}
        if self.ca_file:
            import grpc

            roots = _read_ca(self.ca_file)
            extra = {"grpc_config": GrpcConfig(credentials=grpc.ssl_channel_credentials(root_certificates=roots)),
                     "trust_env": True}
        try:
            with _ca_for_http(self.ca_file):
                return weaviate.connect_to_custom(
                    http_host=self.http_host, http_port=self.http_port, http_secure=self.http_secure,
                    grpc_host=self.grpc_host, grpc_port=self.grpc_port, grpc_secure=self.grpc_secure,
                    auth_credentials=auth,
                    additional_config=AdditionalConfig(timeout=Timeout(init=10, query=60, insert=120),
                                                       **extra),  # type: ignore[arg-type]
                )
        except WeaviateBaseError as exc:
            raise WeaviateUnavailable(f"cannot reach Weaviate at {self.url}: {_reason(exc)}") from exc


def remote_endpoint(config: WeaviateConfig) -> WeaviateEndpoint:
    """The endpoint of a Weaviate named by URL (``HEADWATER_WEAVIATE_URL``)."""
    assert config.url is not None
    http = urlsplit(config.url)
    secure = http.scheme == "https"
    if http.scheme not in {"http", "https"} or not http.hostname:
        raise ValueError(f"weaviate.url must be http(s)://host[:port], got {config.url!r}")
    grpc_host, grpc_port = http.hostname, 443 if secure else 50051
    if config.grpc_url:
        grpc = urlsplit(config.grpc_url if "//" in config.grpc_url else f"//{config.grpc_url}")
        grpc_host, grpc_port = grpc.hostname or grpc_host, grpc.port or grpc_port
    return WeaviateEndpoint(
        http_host=http.hostname, http_port=http.port or (443 if secure else 80), http_secure=secure,
        grpc_host=grpc_host, grpc_port=grpc_port, grpc_secure=secure, api_key=config.api_key,
        ca_file=str(config.ca_file) if config.ca_file else None,
    )


def embedded_server(config: WeaviateConfig) -> EmbeddedWeaviate:
    binary = config.binary or binary_path(config.version)
    return EmbeddedWeaviate(config.data_dir, binary, config.version, config.startup_timeout_s)


@contextlib.contextmanager
def weaviate_endpoint(config: WeaviateConfig, say: Callable[[str], None] = print) -> Iterator[WeaviateEndpoint]:
    """The endpoint to use for the duration of a command.

    With a URL configured, that server. Otherwise the embedded server: started when no server
    runs on the data dir (and stopped again on exit), reused as it is when one already runs.
    """
    if config.url:
        yield remote_endpoint(config)
        return
    server = embedded_server(config)
    state, started = server.start()
    if started:
        say(f"started embedded Weaviate {state.version} at {state.http_url} (data: {config.data_dir})")
    try:
        yield WeaviateEndpoint(HOST, state.ports["http"], False, HOST, state.ports["grpc"], False)
    finally:
        if started:
            server.stop()


@contextlib.contextmanager
def weaviate_client(endpoint: WeaviateEndpoint) -> Iterator[weaviate.WeaviateClient]:
    client = endpoint.connect()
    try:
        yield client
    finally:
        client.close()


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _ca_for_http(ca_file: str | None) -> Iterator[None]:
    """The client's HTTP transport reads its CA bundle from SSL_CERT_FILE when it is built (it has no
    parameter for one): set it for that moment only."""
    if not ca_file:
        yield
        return
    with _ENV_LOCK:
        before = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = ca_file
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = before


def _read_ca(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise WeaviateUnavailable(f"weaviate.ca_file {path}: cannot read it ({exc.strerror or exc})") from exc


_UNAUTHORIZED = re.compile(r"\b401\b|unauthorized|anonymous access not enabled", re.IGNORECASE)
_FORBIDDEN = re.compile(r"status code:? 403\b|\b403 forbidden|\bforbidden\b", re.IGNORECASE)


def _reason(exc: BaseException) -> str:
    chain, seen = [], 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:  # the client wraps the transport's error (explicit causes only)
        chain.append(f"{type(cause).__name__}: {cause}")
        cause, seen = cause.__cause__, seen + 1
    text = " | ".join(chain)
    if _UNAUTHORIZED.search(text):
        return "the server refused the credentials (HTTP 401): set HEADWATER_WEAVIATE_API_KEY to a valid key"
    if _FORBIDDEN.search(text):
        return "the key's user may not do this (HTTP 403)"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "its TLS certificate is not trusted: set weaviate.ca_file to the CA bundle that signed it"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
