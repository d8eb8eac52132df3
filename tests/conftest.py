"""Shared fixtures: small generated corpora, and the real Weaviate, Ray and Prefect."""

from __future__ import annotations

from infra.environment import apply_quiet_defaults

apply_quiet_defaults()

import gzip  # noqa: E402
import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

MAN_PAGE = r""".\" comment line
.TH FROBNICATE 1 "2024" "frob 1.0"
.SH NAME
frobnicate \- adjust the quantum flux of a widget
.SH SYNOPSIS
.B frobnicate
[\fB\-v\fR] \fIwidget\fR
.SH DESCRIPTION
.PP
\fBfrobnicate\fR recalibrates the quantum flux capacitor inside a widget so that
its resonance matches the harmonic of the host lattice.
.SS Options
.TP
.B \-v
Print every flux adjustment as it happens.
"""


def write_corpus(root: Path) -> dict[str, Path]:
    """A small, varied corpus made here (no shared data needed), with one broken and one odd file."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "hockey.md": "# Stanley Cup history\n\nThe Stanley Cup is the championship trophy of the National "
        "Hockey League. It was donated in 1892 by Lord Stanley of Preston.\n\n## Winners\n\n"
        "The Montreal Canadiens have won the Stanley Cup more times than any other team.\n",
        "bread.html": "<html><head><title>Sourdough</title></head><body><h1>Baking sourdough bread</h1>"
        "<p>A sourdough starter is a fermented mixture of flour and water containing wild yeast "
        "and lactic acid bacteria.</p><h2>Proofing</h2><p>Let the dough proof overnight in the "
        "refrigerator to develop a sour flavour.</p></body></html>",
        "volcano.txt": "Volcanoes form where magma from the mantle reaches the surface.\n\n"
        "Shield volcanoes such as Mauna Loa have gentle slopes built by fluid basalt lava flows.\n",
        "notes.rst": "Rivers\n======\n\nThe Amazon river carries more water than any other river on Earth.\n\n"
        "Deltas\n------\n\nA delta forms where a river deposits sediment at its mouth.\n",
        "empty.txt": "",
        "image.png": "not really a png",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = root / name
        paths[name].write_text(text)
    paths["frobnicate.1.gz"] = root / "frobnicate.1.gz"
    paths["frobnicate.1.gz"].write_bytes(gzip.compress(MAN_PAGE.encode()))
    paths["broken.docx"] = root / "broken.docx"
    paths["broken.docx"].write_bytes(b"PK\x03\x04 this is not really a zip archive")
    return paths


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def weaviate_binary() -> Path:
    from infra.weaviate.install import install
    from schemas.config import WEAVIATE_VERSION

    return install(WEAVIATE_VERSION, say=lambda _m: None)


@pytest.fixture(scope="session")
def weaviate_endpoint(weaviate_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real Weaviate server for the session, on free loopback ports, with its own data dir."""
    from infra.weaviate.connection import WeaviateEndpoint
    from infra.weaviate.server import HOST, EmbeddedWeaviate
    from schemas.config import WEAVIATE_VERSION

    server = EmbeddedWeaviate(tmp_path_factory.mktemp("weaviate"), weaviate_binary, WEAVIATE_VERSION)
    state, _ = server.start()
    try:
        yield WeaviateEndpoint(HOST, state.ports["http"], False, HOST, state.ports["grpc"], False)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             object_store_memory=512 * 1024 * 1024)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (the shared data set sits beside the repository)")
    return SHARED_DATA


def make_config(tmp_path: Path, endpoint: object | None = None, **sections: dict[str, object]) -> object:
    """A config for tests: small chunks, reports under tmp_path, and the test server's URL."""
    from schemas.config import HeadwaterConfig

    values: dict[str, object] = {"chunk": {"size_tokens": 64, "overlap_tokens": 8},
                                 "runs": {"report_dir": str(tmp_path / "reports")}}
    if endpoint is not None:
        values["weaviate"] = {"url": endpoint.url, "grpc_url": f"{endpoint.grpc_host}:{endpoint.grpc_port}"}  # type: ignore[attr-defined]
    values.update(sections)
    os.environ.pop("HEADWATER_CONFIG", None)
    return HeadwaterConfig(**values)
