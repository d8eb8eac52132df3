"""The ``headwater`` command line, in-process, against the real test server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from infra.weaviate.connection import WeaviateEndpoint

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def remote_env(monkeypatch: pytest.MonkeyPatch, weaviate_endpoint: WeaviateEndpoint, tmp_path: Path) -> None:
    monkeypatch.setenv("HEADWATER_RUNS__REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("HEADWATER_WEAVIATE_URL", weaviate_endpoint.url)
    monkeypatch.setenv("HEADWATER_WEAVIATE_GRPC_URL", f"{weaviate_endpoint.grpc_host}:{weaviate_endpoint.grpc_port}")
    monkeypatch.setenv("HEADWATER_CHUNK__SIZE_TOKENS", "64")
    monkeypatch.setenv("HEADWATER_CHUNK__OVERLAP_TOKENS", "8")
    monkeypatch.setenv("COLUMNS", "200")


def test_ingest_then_search_in_every_mode(corpus: dict[str, Path], remote_env: None,
                                          ray_local: None, prefect_harness: None) -> None:
    result = runner.invoke(app, ["ingest", str(corpus["hockey.md"].parent), "--collection", "CliE2E"])
    assert result.exit_code == 0, result.output
    assert "3 files not indexed" in result.output
    lines = result.output.splitlines()
    assert any("EmptyDocument" in line and "empty.txt: file is empty" in line for line in lines)
    assert any("UnsupportedFileType" in line and "image.png" in line for line in lines)
    assert "documents added" in result.output and "objects in collection" in result.output
    for mode in ("bm25", "vector", "hybrid"):
        result = runner.invoke(app, ["search", "stanley cup", "--mode", mode, "--limit", "2", "--collection", "CliE2E"])
        assert result.exit_code == 0, result.output
        first_hit = result.output.split("\n 1. ", 1)[1]
        assert "hockey.md" in first_hit.splitlines()[0] and "Stanley Cup history" in first_hit


def test_search_unknown_collection_and_bad_mode(remote_env: None) -> None:
    result = runner.invoke(app, ["search", "anything", "--mode", "bm25", "--collection", "NoSuchCollection"])
    assert result.exit_code == 1 and "no collection" in result.output
    result = runner.invoke(app, ["search", "anything", "--mode", "fuzzy"])
    assert result.exit_code != 0


def test_weaviate_commands_refuse_when_a_url_is_set(remote_env: None) -> None:
    result = runner.invoke(app, ["weaviate", "status"])
    assert result.exit_code == 2 and "HEADWATER_WEAVIATE_URL is set" in result.output


def test_weaviate_lifecycle_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weaviate_binary: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("HEADWATER_WEAVIATE_URL", raising=False)
    assert runner.invoke(app, ["weaviate", "status"]).exit_code == 3
    result = runner.invoke(app, ["weaviate", "start"])
    assert result.exit_code == 0 and "started" in result.output, result.output
    try:
        result = runner.invoke(app, ["weaviate", "status"])
        assert result.exit_code == 0 and "running, ready" in result.output
        assert "already running" in runner.invoke(app, ["weaviate", "start"]).output
    finally:
        assert "stopped" in runner.invoke(app, ["weaviate", "stop"]).output
    assert runner.invoke(app, ["weaviate", "status"]).exit_code == 3
