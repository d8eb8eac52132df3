"""Named crash points, for proving that a run killed at any moment converges on the next one,
and worker kill points, for proving that a Ray worker killed mid-run costs a retry, not data.

``HEADWATER_CRASH_AT=<point>`` makes the run kill itself with SIGKILL when it reaches that point:
no cleanup, no finally blocks, exactly like ``kill -9`` of the command and its Ray processes.
Unset (always, in production), a crash point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_discover", "during_upsert", "after_upsert", "after_delete", "before_ledger")


def arm() -> None:
    """Remember the command's process group, so a Ray worker reaching a point takes the driver too."""
    if os.environ.get("HEADWATER_CRASH_AT"):
        os.environ.setdefault("HEADWATER_CRASH_PGID", str(os.getpgrp()))


def crash_point(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}")
    if os.environ.get("HEADWATER_CRASH_AT") == name:
        os.killpg(int(os.environ.get("HEADWATER_CRASH_PGID") or os.getpgrp()), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)  # in case this process sits in another group


WORKER_POINTS = ("parse", "embed")


def kill_point(name: str) -> None:
    """``HEADWATER_KILL_WORKER_AT=<point>`` kills the one process (a Ray worker) that reaches the point
    with SIGKILL, once per marker file ``HEADWATER_KILL_WORKER_MARKER``: the run itself must recover."""
    if name not in WORKER_POINTS:
        raise ValueError(f"unknown worker kill point {name!r}")
    if os.environ.get("HEADWATER_KILL_WORKER_AT") != name:
        return
    marker = os.environ.get("HEADWATER_KILL_WORKER_MARKER")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
