"""The dead-letter store's rules: what is recorded, and which failed sources a run tries again."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from schemas.records import DOCUMENT, doc_id_for
from tasks.deadletter import DeadLetter, merge_failures, retry_due
from tasks.diff import plan_changes

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def _letter(name: str, sha: str, retryable: bool = False, stage: str = "parse", attempts: int = 1) -> DeadLetter:
    uri = f"file:///src/{name}"
    return DeadLetter(doc_id_for(uri), uri, stage, "CorruptDocument", "zip cannot be read", retryable, attempts,
                      T0, T0, sha, "cfg")


def _error(name: str, stage: str = "parse", retryable: bool = False, kind: str = "CorruptDocument") -> dict:
    uri = f"file:///src/{name}"
    return {"doc_id": doc_id_for(uri), "source_uri": uri, "stage": stage, "error_type": kind,
            "message": "zip cannot be read", "retryable": retryable}


def test_retry_only_when_retryable_or_changed() -> None:
    assert retry_due(None, "a", "cfg")
    assert not retry_due(_letter("x.docx", "a"), "a", "cfg")
    assert retry_due(_letter("x.docx", "a"), "b", "cfg")  # the bytes changed
    assert retry_due(_letter("x.docx", "a"), "a", "cfg2")  # the parser/chunker/model changed
    assert retry_due(_letter("x.docx", "a", retryable=True), "a", "cfg")


def test_merge_counts_attempts_keeps_first_seen_and_resets_on_new_bytes() -> None:
    previous = {"file:///src/x.docx": _letter("x.docx", "a", attempts=2),
                "file:///src/y.docx": _letter("y.docx", "a", attempts=5)}
    attempted = {doc_id_for("file:///src/x.docx"): "a", doc_id_for("file:///src/y.docx"): "b",
                 doc_id_for("file:///src/new.pdf"): "n"}
    out = {d.source_uri.rsplit("/", 1)[1]: d for d in merge_failures(
        previous, [_error("x.docx"), _error("y.docx"), _error("new.pdf")], attempted, "cfg", T1)}
    assert (out["x.docx"].attempts, out["x.docx"].first_seen, out["x.docx"].last_seen) == (3, T0, T1)
    assert (out["y.docx"].attempts, out["y.docx"].content_sha256) == (1, "b")  # new bytes: a new count
    assert (out["new.pdf"].attempts, out["new.pdf"].first_seen, out["new.pdf"].content_sha256) == (1, T1, "n")


def test_a_listing_refusal_is_rewritten_only_when_it_changes() -> None:
    previous = {"file:///src/loop.txt": _letter("loop.txt", "", stage="discover")}
    same = _error("loop.txt", stage="discover")
    assert merge_failures(previous, [same], {}, "cfg", T1) == []
    other = {**same, "error_type": "BrokenSymlink"}
    (letter,) = merge_failures(previous, [other], {}, "cfg", T1)
    assert letter.error_type == "BrokenSymlink" and letter.attempts == 2


def test_plan_skips_unchanged_failures_and_retries_the_rest() -> None:
    def doc(name: str, sha: str) -> dict:
        uri = f"file:///src/{name}"
        return {"doc_id": doc_id_for(uri), "source_uri": uri, "path": f"/src/{name}", "size": 1, "mtime_ns": 1,
                "content_sha256": sha}

    docs = pa.Table.from_pylist([doc("bad.docx", "a"), doc("fixed.docx", "b2"), doc("flaky.md", "c"),
                                 doc("good.md", "d")], schema=DOCUMENT)
    dead = {d.source_uri: d for d in (_letter("bad.docx", "a"), _letter("fixed.docx", "b1"),
                                      _letter("flaky.md", "c", retryable=True))}
    plan = plan_changes(docs, {}, "cfg", dead_letters=dead)
    assert [d.source_uri for d in plan.not_retried] == ["file:///src/bad.docx"]
    assert sorted(plan.to_process.column("source_uri").to_pylist()) == [
        "file:///src/fixed.docx", "file:///src/flaky.md", "file:///src/good.md"]
    assert doc_id_for("file:///src/bad.docx") not in plan.new
