"""What the CLI prints: one console, and the one progress display of its long commands.

A rebuild and a billing replay report through callbacks (a line, records read of how
many); this is where the CLI renders them, so ``agentlog projections rebuild`` and
``agentlog replay billing`` look alike. The projections layer prints nothing itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from projections.rebuild import Pace

# No wrapping: hashes, ids and differences are read by scripts too.
console = Console(soft_wrap=True)


def say(line: str) -> None:
    """Print a line as it is (a reported line may hold brackets rich would read)."""
    console.print(line, markup=False)


@dataclass(frozen=True)
class Reporting:
    """The callbacks a long command reports through."""

    out: Callable[[str], None]
    on_progress: Callable[[int, int], None]


@contextlib.contextmanager
def progress(description: str) -> Iterator[Reporting]:
    """A progress bar of records read, with their rate and the time left at it, for as
    long as the block runs; the lines reported meanwhile are printed above it."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[left]}"),
        console=console,
    ) as bar:
        task = bar.add_task(description, total=None, rate="", left="")
        started = time.monotonic()

        def on_progress(read: int, total: int) -> None:
            pace = Pace.of(read, total, time.monotonic() - started)
            left = "" if pace.seconds_left is None else f"{pace.seconds_left:,.0f} s left"
            rate = f"{pace.per_second:,.0f} records/s"
            bar.update(task, completed=read, total=total, rate=rate, left=left)

        yield Reporting(out=say, on_progress=on_progress)
