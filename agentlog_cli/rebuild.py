"""``agentlog projections rebuild``: a projection rebuilt from offset 0 beside the live
one, verified and swapped in, with the CLI's progress display."""

from __future__ import annotations

import argparse

from projections.rebuild import BILLING_MODELS, CORE, rebuild
from streams.settings import Settings

from .output import progress, say


async def rebuild_command(settings: Settings, args: argparse.Namespace) -> None:
    """A mismatch is raised (RebuildMismatchError, naming the tables and rows that
    differ): the command then exits 1 with it on stderr, and swaps nothing."""
    models = BILLING_MODELS if args.name == "billing" else CORE
    changed = frozenset(t for t in args.changed.split(",") if t)
    with progress(f"rebuilding {args.name}") as reporting:
        report = await rebuild(
            settings,
            swap=not args.no_swap,
            out=reporting.out,
            models=models,
            on_progress=reporting.on_progress,
            changed=changed,
        )
    rate = report.events / max(report.seconds, 1e-9)
    say(f"rebuild: {report.events} events in {report.seconds:.1f} s ({rate:,.0f}/s)")
