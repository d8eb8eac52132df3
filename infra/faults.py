"""Named crash points, for proving that a run killed at any moment converges on the next one.

``HEADWATER_CRASH_AT=<point>`` makes the process kill itself with SIGKILL when it reaches that
point: no cleanup, no finally blocks, exactly like ``kill -9``. Unset (always, in production),
a crash point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_discover", "after_upsert", "after_delete", "before_ledger")


def crash_point(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}")
    if os.environ.get("HEADWATER_CRASH_AT") != name:
        return
    if os.getpgrp() == os.getpid():  # a CLI started as its own group: take its Ray processes too
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
