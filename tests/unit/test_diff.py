from __future__ import annotations

import pyarrow as pa

from schemas.records import DOCUMENT, doc_id_for
from tasks.diff import LedgerEntry, known_stats, mass_delete_refusal, plan_changes

HASH = "cfg1"


def _doc(name: str, sha: str, size: int = 10, mtime: int = 1) -> dict[str, object]:
    uri = f"file:///src/{name}"
    return {"doc_id": doc_id_for(uri), "source_uri": uri, "path": f"/src/{name}", "size": size,
            "mtime_ns": mtime, "content_sha256": sha}


def _entry(name: str, sha: str, size: int = 10, mtime: int = 1, config_hash: str = HASH) -> LedgerEntry:
    uri = f"file:///src/{name}"
    return LedgerEntry(doc_id_for(uri), uri, size, mtime, sha, config_hash, ("c1", "c2"))


def _plan(docs: list[dict[str, object]], entries: list[LedgerEntry], **kw: object):  # type: ignore[no-untyped-def]
    table = pa.Table.from_pylist(docs, schema=DOCUMENT)
    return plan_changes(table, {e.source_uri: e for e in entries}, HASH, **kw)  # type: ignore[arg-type]


def test_every_kind_of_change_is_classified() -> None:
    docs = [_doc("same.md", "a"), _doc("touched.md", "b", mtime=2), _doc("edited.md", "c2"),
            _doc("moved/new-name.md", "d"), _doc("brand-new.md", "e")]
    ledger = [_entry("same.md", "a"), _entry("touched.md", "b"), _entry("edited.md", "c1"),
              _entry("old-name.md", "d"), _entry("removed.md", "f")]
    plan = _plan(docs, ledger)
    assert sorted(plan.unchanged) == sorted([doc_id_for("file:///src/same.md"), doc_id_for("file:///src/touched.md")])
    assert [r["source_uri"] for r in plan.touched] == ["file:///src/touched.md"]
    assert plan.modified == [doc_id_for("file:///src/edited.md")]
    assert plan.new == [doc_id_for("file:///src/brand-new.md")]
    (rename,) = plan.renamed
    assert rename.old.source_uri == "file:///src/old-name.md" and rename.new["source_uri"].endswith("new-name.md")
    assert [e.source_uri for e in plan.deleted] == ["file:///src/removed.md"]
    assert sorted(plan.to_process.column("source_uri").to_pylist()) == [
        "file:///src/brand-new.md", "file:///src/edited.md"]


def test_semantic_config_change_reprocesses_and_blocks_rename() -> None:
    plan = _plan([_doc("a.md", "a"), _doc("b2.md", "b")],
                 [_entry("a.md", "a", config_hash="old"), _entry("b1.md", "b", config_hash="old")])
    assert plan.modified == [doc_id_for("file:///src/a.md")]
    assert plan.new == [doc_id_for("file:///src/b2.md")] and not plan.renamed
    assert [e.source_uri for e in plan.deleted] == ["file:///src/b1.md"]


def test_unreadable_files_are_not_deleted() -> None:
    plan = _plan([], [_entry("locked.md", "a")], unreadable={"file:///src/locked.md"})
    assert not plan.deleted


def test_mass_delete_guard() -> None:
    plan = _plan([_doc("a.md", "a")], [_entry("a.md", "a")] + [_entry(f"{i}.md", str(i)) for i in range(3)])
    assert len(plan.deleted) == 3
    refusal = mass_delete_refusal(plan, ledger_size=4, max_fraction=0.2)
    assert refusal is not None and "3 of 4" in refusal and "--allow-mass-delete" in refusal
    assert mass_delete_refusal(plan, ledger_size=100, max_fraction=0.2) is None


def test_known_stats_feed_the_discovery_fast_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from schemas.config import ParseConfig
    from tasks.discover import discover_documents, source_uri_for

    path = tmp_path / "a.txt"
    path.write_text("hello")
    stat = path.stat()
    uri = source_uri_for(path)
    # A recorded hash for an unchanged stat is trusted without reading the file ...
    known = {uri: (stat.st_size, stat.st_mtime_ns, "recorded")}
    trusted = discover_documents(tmp_path, ParseConfig(), known).documents.column("content_sha256")[0].as_py()
    assert trusted == "recorded"
    # ... and a changed stat means the file is hashed again.
    known = {uri: (stat.st_size + 1, stat.st_mtime_ns, "recorded")}
    fresh = discover_documents(tmp_path, ParseConfig(), known).documents.column("content_sha256")[0].as_py()
    assert fresh != "recorded" and len(fresh) == 64
    assert known_stats({uri: _entry("x", "s")})[uri] == (10, 1, "s")
