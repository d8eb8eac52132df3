"""Parse one document at a time in a child process, under a time limit and a memory cap.

A decompression bomb, a pathological PDF or a parser bug that spins forever must cost one
document, never the run: the child is stopped when a document takes longer than
``parse_limits.timeout_s`` or its process tree grows past ``parse_limits.memory_mb``, the
document is recorded as failed, and the next document gets a fresh child. A child that dies on
its own (a segfault in a C library, the kernel's OOM killer) is recorded the same way.

The child is started once and reused; it imports the parser once, like the actor that owns it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from schemas.config import ParseConfig, ParseLimitsConfig
from tasks.parse import ParseFailure, one_line, parse_document, partition_elements, use_packaged_spacy_model

# How often the limits are checked while a document parses (an answer wakes the wait at once, so this
# adds no latency; each check walks the process table for the child's own children).
_POLL_S = 0.1
_START_TIMEOUT_S = 120.0


class IsolatedParser:
    """``parse(doc)`` with :func:`tasks.parse.parse_document`'s contract, run in a child process."""

    def __init__(self, config: ParseConfig, limits: ParseLimitsConfig) -> None:
        self.config = config
        self.limits = limits
        self._child: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def __call__(self, doc: dict[str, Any], config: ParseConfig) -> list[dict[str, Any]]:
        return self.parse(doc)

    def parse(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """ELEMENT rows of ``doc``.

        Raises:
            ParseFailure: the parser refused the document, ran out of time or memory, or died.
        """
        conn, child = self._start()
        conn.send(doc)
        started = time.monotonic()
        while not conn.poll(_POLL_S):
            elapsed = time.monotonic() - started
            if child.poll() is not None:
                self._stop()
                raise ParseFailure("ParserCrashed", f"the parser process died ({_exit_reason(child.returncode)}) "
                                   "while parsing this file")
            if elapsed > self.limits.timeout_s:
                self._stop()
                raise ParseFailure("ParseTimeout", f"parsing took longer than parse_limits.timeout_s="
                                   f"{self.limits.timeout_s:g}s; stopped")
            rss = _tree_rss(child.pid)
            if rss > self.limits.memory_mb * 1024 * 1024:
                self._stop()
                raise ParseFailure("ParseMemoryLimit", f"the parser grew to {rss // (1024 * 1024)} MiB, over "
                                   f"parse_limits.memory_mb={self.limits.memory_mb}; stopped")
        try:
            outcome = conn.recv()
        except (EOFError, OSError) as exc:  # the pipe closed: the child died
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
            code = child.returncode
            self._stop()
            raise ParseFailure("ParserCrashed", f"the parser process died ({_exit_reason(code)}) "
                               "while parsing this file") from exc
        if outcome[0] == "ok":
            return outcome[1]
        _, error_type, message, retryable = outcome
        raise ParseFailure(error_type, message, retryable)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        self._stop()

    def _start(self) -> tuple[Connection, subprocess.Popen[bytes]]:
        if self._child is not None and self._child.poll() is None and self._conn is not None:
            return self._conn, self._child
        self._stop()
        # A fresh interpreter, never a fork: the owner is a Ray worker with gRPC threads, which a fork
        # would copy mid-flight; and not multiprocessing's spawn, which re-imports the owner's __main__.
        mine, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        child = subprocess.Popen([sys.executable, "-m", "tasks.isolate", str(theirs.fileno())],
                                 pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        conn = Connection(mine.detach())
        conn.send(self.config)
        try:
            ready = conn.poll(_START_TIMEOUT_S) and conn.recv() == "ready"
        except (EOFError, OSError):  # it died while starting
            ready = False
        if not ready:
            _kill_tree(child.pid)
            conn.close()
            raise ParseFailure("ParserUnavailable", "the isolated parser process did not start", retryable=True)
        self._child, self._conn = child, conn
        return conn, child

    def _stop(self) -> None:
        child, self._child = self._child, None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if child is None:
            return
        if child.poll() is None:
            _kill_tree(child.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)


_ROOT = str(Path(__file__).resolve().parents[1])


def _serve(conn: Connection) -> None:
    """The child: parse documents from ``conn`` until it sends None."""
    from infra.environment import apply_quiet_defaults

    _die_with_parent()
    apply_quiet_defaults()
    config: ParseConfig = conn.recv()
    use_packaged_spacy_model()
    _warm_up(config)
    conn.send("ready")
    while True:
        try:
            doc = conn.recv()
        except EOFError:
            return
        if doc is None:
            return
        try:
            conn.send(("ok", parse_document(doc, config)))
        except ParseFailure as exc:
            conn.send(("fail", exc.error_type, str(exc), exc.retryable))
        except Exception as exc:  # a parser bug or broken file
            conn.send(("fail", type(exc).__name__, one_line(exc), False))


def _warm_up(config: ParseConfig) -> None:
    """Parse two tiny documents before answering "ready": unstructured imports its partitioners and loads
    its NLP models on first use, which would otherwise count against the first real document's time
    limit (seconds, many more on a loaded machine)."""
    for name, payload in (("warm-up.md", b"# Warm-up\n\nA sentence that loads the parser.\n"),
                          ("warm-up.txt", b"Warm-up\n\nA sentence that loads the parser.\n")):
        with contextlib.suppress(Exception):  # a real document will report any real problem
            partition_elements(Path(name), name, payload, config)


def _die_with_parent() -> None:
    """Exit when the owner dies (a Ray actor killed mid-document), so a long parse never outlives the
    run: a watchdog thread sees the parent pid change (the child is re-parented)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _tree_rss(pid: int | None) -> int:
    """Resident memory of a process and its children (e.g. pandoc run by the parser)."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for sub in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += sub.memory_info().rss
        return total
    except psutil.Error:
        return 0


def _kill_tree(pid: int | None) -> None:
    try:
        proc = psutil.Process(pid)
        procs = [*proc.children(recursive=True), proc]
    except psutil.Error:
        return
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
