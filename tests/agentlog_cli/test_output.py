"""One progress display for the CLI's long commands: ``agentlog projections rebuild`` and
``agentlog replay billing`` both render what the projections layer reports through its
callbacks (lines, records read of how many) with it."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from rich.console import Console

from agentlog_cli import billing, output
from agentlog_cli import rebuild as rebuild_cli
from projections.rebuild import RebuildReport
from streams.settings import Settings


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the CLI's console prints, as a file that is not a terminal prints it."""
    buffer = io.StringIO()
    console = Console(file=buffer, soft_wrap=True, width=100)
    monkeypatch.setattr(output, "console", console)
    monkeypatch.setattr(billing, "console", console)  # billing's own lines
    return buffer


async def reporting(*, out: Any, on_progress: Any, **_: Any) -> RebuildReport:
    """A rebuild that reports as the projections layer does: lines and records read."""
    out("rebuild: folding 10 records from offset 0 into s_rebuild [sic]")
    for read in (4, 10):
        on_progress(read, 10)
    return RebuildReport(10, 2.0, {}, None, [])


def test_the_progress_display_prints_lines_as_they_are_and_records_read(
    printed: io.StringIO,
) -> None:
    with output.progress("working") as shown:
        shown.out("a [bold]line[/bold]")
        shown.on_progress(7, 7)
    assert printed.getvalue().splitlines()[0] == "a [bold]line[/bold]"
    assert "working" in printed.getvalue()
    assert "7/7" in printed.getvalue()
    assert "records/s" in printed.getvalue()
    assert "0 s left" in printed.getvalue()


async def test_a_rebuild_is_shown_by_the_progress_display(
    printed: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rebuild(settings: Settings, **kwargs: Any) -> RebuildReport:
        return await reporting(**kwargs)

    monkeypatch.setattr(rebuild_cli, "rebuild", rebuild)
    args = argparse.Namespace(name="core", no_swap=True, changed="")
    await rebuild_cli.rebuild_command(Settings(), args)
    lines = printed.getvalue().splitlines()
    assert lines[0] == "rebuild: folding 10 records from offset 0 into s_rebuild [sic]"
    assert "rebuilding core" in lines[1]
    assert "10/10" in lines[1]
    assert lines[2] == "rebuild: 10 events in 2.0 s (5/s)"


async def test_a_billing_replay_is_shown_by_the_same_display(
    printed: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def replay_billing(settings: Settings, **kwargs: Any) -> RebuildReport:
        return await reporting(**kwargs)

    monkeypatch.setattr(billing, "replay_billing", replay_billing)
    args = argparse.Namespace(plan=None, swap=False)
    assert await billing.replay_command(Settings(), args) == 0
    lines = printed.getvalue().splitlines()
    assert lines[0] == "rebuild: folding 10 records from offset 0 into s_rebuild [sic]"
    assert "replaying usage and billing" in lines[1]
    assert "10/10" in lines[1]
    assert lines[2] == "replay: 10 events in 2.0 s (5/s)"
