"""Named crash points, for proving that a run killed at any moment converges on the next one.

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
