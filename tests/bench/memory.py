"""Peak resident memory of a process tree, sampled from /proc: a benchmark's own, and
its descendants' (a rebuild's fold processes are its fork server's children, which
``/usr/bin/time`` does not always see).

Standard library only, as ``cpu.py``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def _command(pid: int) -> str:
    words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return " ".join(w.decode(errors="replace") for w in words if w)[:80]


def tree_rss(root: int) -> dict[int, tuple[str, int]]:
    """Each process of ``root``'s tree (``root`` included): its command line (shortened)
    and resident kB."""
    parents: dict[int, int] = {}
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        try:
            status = _status(pid)
            command = _command(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended meanwhile
        parents[pid] = int(status.get("PPid", "0"))
        found[pid] = (command, int(status.get("VmRSS", "0 kB").split()[0]))
    tree = {}
    for pid, named in found.items():
        ancestor = pid
        while ancestor not in (0, 1, root):
            ancestor = parents.get(ancestor, 0)
        if ancestor == root:
            tree[pid] = named
    return tree


class PeakRss:
    """``with PeakRss() as peak:`` samples this process's tree every ``every`` seconds;
    ``peak.kb`` and ``peak.name`` are then the largest resident size any one process
    of it reached, and which process that was."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.kb = 0
        self.name = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        root = os.getpid()
        while not self._stop.wait(self.every):
            for pid, (name, kb) in tree_rss(root).items():
                if kb > self.kb:
                    self.kb, self.name = kb, f"{name} ({'this' if pid == root else pid})"
