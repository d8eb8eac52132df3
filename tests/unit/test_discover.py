from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.config import ParseConfig
from schemas.records import DOCUMENT, doc_id_for
from tasks.discover import discover_documents, file_sha256, source_uri_for


def test_discover_lists_supported_files_with_hashes(corpus: dict[str, Path]) -> None:
    found = discover_documents(corpus["hockey.md"].parent, ParseConfig())
    assert found.documents.schema.equals(DOCUMENT)
    names = sorted(Path(p).name for p in found.documents.column("path").to_pylist())
    assert names == sorted(n for n in corpus if n != "image.png")
    row = next(r for r in found.documents.to_pylist() if r["path"].endswith("hockey.md"))
    assert row["content_sha256"] == file_sha256(corpus["hockey.md"])
    assert row["size"] == corpus["hockey.md"].stat().st_size
    assert row["doc_id"] == doc_id_for(source_uri_for(corpus["hockey.md"]))
    (error,) = found.errors.to_pylist()
    assert error["source_uri"].endswith("image.png")
    assert (error["stage"], error["error_type"]) == ("discover", "UnsupportedFileType")


def test_doc_ids_are_stable_across_runs(corpus: dict[str, Path]) -> None:
    first = discover_documents(corpus["hockey.md"].parent, ParseConfig())
    second = discover_documents(corpus["hockey.md"].parent, ParseConfig())
    assert first.documents.column("doc_id").to_pylist() == second.documents.column("doc_id").to_pylist()


def test_symlink_out_of_root_is_refused_and_limits_apply(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("do not index me")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.txt").symlink_to(outside)
    (root / "big.txt").write_text("x" * 2000)
    (root / "loop.txt").symlink_to(root / "loop.txt")
    found = discover_documents(root, ParseConfig(max_file_bytes=1000))
    assert found.documents.num_rows == 0
    reasons = {Path(e["source_uri"]).name: e["error_type"] for e in found.errors.to_pylist()}
    assert reasons == {"link.txt": "SymlinkOutsideRoot", "big.txt": "FileTooLarge", "loop.txt": "BrokenSymlink"}
    followed = discover_documents(root, ParseConfig(max_file_bytes=1000, follow_symlinks_outside_root=True))
    assert [Path(p).name for p in followed.documents.column("path").to_pylist()] == ["secret.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.txt"
    path.write_text("secret")
    path.chmod(0)
    found = discover_documents(tmp_path, ParseConfig())
    assert found.errors.column("error_type").to_pylist() == ["PermissionError"]


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        discover_documents(tmp_path / "nope", ParseConfig())
