"""Processes the suite starts die with it, even when pytest itself is killed."""

from __future__ import annotations

import os
import signal

from streams.child_processes import dies_with_parent

# For ``Popen(preexec_fn=...)``: the child gets SIGKILL when the test process dies, so an
# interrupted or crashed run leaves no platform behind.
die_with_parent = dies_with_parent(signal.SIGKILL)


def clean_environ() -> dict[str, str]:
    """This process's environment without agentlog's settings: a process the suite starts
    gets only the settings the test gives it, whatever the shell exported
    (``AGENTLOG_TEST_*``, the suite's own switches, are kept)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AGENTLOG_") or name.startswith("AGENTLOG_TEST_")
    }
