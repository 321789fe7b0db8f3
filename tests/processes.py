"""Processes the suite starts die with it, even when pytest itself is killed."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``Popen(preexec_fn=...)``: the child gets SIGKILL when the test process dies
    (Linux), so an interrupted or crashed run leaves no platform behind."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
