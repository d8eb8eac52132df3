from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.weaviate import install as installer


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEADWATER_BIN_CACHE", str(tmp_path / "bin"))
    return tmp_path / "bin"


def test_cached_binary_is_reused_without_building(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = installer.binary_path("v9.9.9")
    target.parent.mkdir(parents=True)
    target.write_text("#!/bin/sh\n")
    target.chmod(target.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(installer, "_go_install", lambda *a: pytest.fail("must not build"))
    said: list[str] = []
    assert installer.install("v9.9.9", say=said.append) == target
    assert "already installed" in said[0]


def test_without_go_or_network_the_error_says_what_is_needed(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(installer.shutil, "which", lambda _name: None)
    monkeypatch.setattr(installer, "_GO_FALLBACKS", ())
    # A loopback port nothing listens on: the download fails at once, as it would offline.
    monkeypatch.setattr(installer, "RELEASE_URL", "http://127.0.0.1:9/{v}-{arch}.tar.gz")
    with pytest.raises(installer.InstallError) as caught:
        installer.install("v1.39.0", say=lambda _m: None)
    message = str(caught.value)
    assert "Go is not on PATH" in message
    assert "download of http://127.0.0.1:9/v1.39.0-amd64.tar.gz failed" in message
    assert "HEADWATER_WEAVIATE_URL" in message and str(installer.binary_path("v1.39.0")) in message
    assert not installer.binary_path("v1.39.0").exists()
