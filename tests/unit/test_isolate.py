"""The isolated parser: a document over the time limit or the memory cap, or one that kills the
parser, costs that document only; the next document parses in a fresh child."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from schemas.config import ParseConfig, ParseLimitsConfig
from schemas.records import doc_id_for
from tasks.isolate import IsolatedParser
from tasks.parse import ParseFailure
from tests.adversarial import docx_bomb, single_line

pytestmark = pytest.mark.slow


def _doc(path: Path) -> dict:
    uri = path.resolve().as_uri()
    return {"doc_id": doc_id_for(uri), "source_uri": uri, "path": str(path), "size": path.stat().st_size,
            "mtime_ns": 0, "content_sha256": "x"}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.md"
    path.write_text("# Harbour\n\nThe lighthouse keeper logs every ship that enters the harbour.\n")
    return path


def _parses(parser: IsolatedParser, good: Path) -> None:
    rows = parser.parse(_doc(good))
    assert [r["text"] for r in rows][-1].startswith("The lighthouse keeper")


def test_time_limit_stops_one_document_and_the_next_parses(tmp_path: Path, good: Path) -> None:
    slow = single_line(tmp_path / "one-line.txt", random.Random(1), megabytes=20)  # minutes unbounded
    parser = IsolatedParser(ParseConfig(), ParseLimitsConfig(timeout_s=3, memory_mb=4096))
    try:
        _parses(parser, good)
        started = time.monotonic()
        with pytest.raises(ParseFailure) as failure:
            parser.parse(_doc(slow))
        assert failure.value.error_type == "ParseTimeout" and "timeout_s=3" in str(failure.value)
        assert time.monotonic() - started < 30
        _parses(parser, good)
    finally:
        parser.close()


def test_memory_cap_stops_a_zip_bomb(tmp_path: Path, good: Path) -> None:
    bomb = docx_bomb(tmp_path / "bomb.docx", random.Random(2), megabytes=600)
    assert bomb.stat().st_size < 5_000_000
    # The content check would refuse it first (it inflates past max_file_bytes); lift that to reach the cap,
    # set above the parser's own ~750 MiB (unstructured and its models loaded).
    parser = IsolatedParser(ParseConfig(max_file_bytes=10**10), ParseLimitsConfig(timeout_s=300, memory_mb=1200))
    try:
        with pytest.raises(ParseFailure) as failure:
            parser.parse(_doc(bomb))
        assert failure.value.error_type == "ParseMemoryLimit", failure.value
        _parses(parser, good)
    finally:
        parser.close()
    checked = IsolatedParser(ParseConfig(max_file_bytes=100_000_000), ParseLimitsConfig())
    try:
        with pytest.raises(ParseFailure) as refused:
            checked.parse(_doc(bomb))
        assert refused.value.error_type == "DecompressionBomb"
    finally:
        checked.close()


def test_a_parser_that_dies_is_recorded_and_replaced(tmp_path: Path, good: Path) -> None:
    slow = single_line(tmp_path / "one-line.txt", random.Random(3), megabytes=20)
    parser = IsolatedParser(ParseConfig(), ParseLimitsConfig(timeout_s=120))
    try:
        _parses(parser, good)
        child = parser._child
        assert child is not None
        threading.Timer(1.0, child.kill).start()  # like the kernel's OOM killer
        with pytest.raises(ParseFailure) as failure:
            parser.parse(_doc(slow))
        assert failure.value.error_type == "ParserCrashed" and "SIGKILL" in str(failure.value)
        _parses(parser, good)
        assert parser._child is not child
    finally:
        parser.close()


def test_the_child_does_not_outlive_a_killed_owner(tmp_path: Path, good: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    import psutil

    slow = single_line(tmp_path / "one-line.txt", random.Random(4), megabytes=20)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from schemas.config import ParseConfig, ParseLimitsConfig\n"
        "from tasks.isolate import IsolatedParser\n"
        "from tests.unit.test_isolate import _doc\n"
        "parser = IsolatedParser(ParseConfig(), ParseLimitsConfig())\n"
        "parser.parse(_doc(Path(sys.argv[1])))\n"
        "print(parser._child.pid, flush=True)\n"
        "parser.parse(_doc(Path(sys.argv[2])))\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(good), str(slow)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child = psutil.Process(int(owner.stdout.readline()))
    time.sleep(2)  # the child is now deep in the slow document
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    gone, _ = psutil.wait_procs([child], timeout=15)
    assert gone, "the parser child outlived its owner"
