"""CPU time of processes, from /proc: a benchmark's own, its children's, Postgres's.

Standard library only: the peers' benchmark imports it from its own environment.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def postgres_seconds() -> float:
    """CPU time so far of every Postgres process summed. Postgres serves other work on
    this machine too: read it on a quiet machine."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                total += cpu_seconds(int(comm.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a backend that ended meanwhile
    return total


def cpu_by_process(named: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process, and of Postgres's processes summed."""
    cpu = {name: cpu_seconds(pid) for name, pid in named.items()}
    cpu["postgres"] = postgres_seconds()
    return cpu
