"""Consumer groups over real clients: rebalances on join, leave and session expiry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.eventually import eventually
from tests.kafka import REPO
from tests.processes import die_with_parent
from tests.streams.clients import CLIENTS, ConfluentClient, Sent


class Member:
    def __init__(self, client: str, bootstrap: str, topic: str, group: str, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.streams.group_member", client, bootstrap, topic, group],
            cwd=REPO,
            stdout=out.open("wb"),
            preexec_fn=die_with_parent,
        )

    def events(self) -> list[dict[str, Any]]:
        lines = self.out.read_bytes().splitlines()
        return [json.loads(line) for line in lines if line.endswith(b"}")]

    def values(self) -> set[str]:
        return {e["v"] for e in self.events() if e["event"] == "record"}

    def assignment(self) -> list[int] | None:
        assigned = [e["partitions"] for e in self.events() if e["event"] == "assigned"]
        return assigned[-1] if assigned else None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for m in started:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait(10)


def produce(bootstrap: str, topic: str, start: int, count: int) -> set[str]:
    values = [str(i) for i in range(start, start + count)]
    ConfluentClient(bootstrap).produce(
        topic, [Sent(key=v.encode(), value=v.encode()) for v in values]
    )
    return set(values)


@pytest.mark.slow
@pytest.mark.parametrize("client", [c.name for c in CLIENTS])
def test_group_rebalances_on_leave_and_expiry_and_resumes_from_commits(
    client: str, bootstrap: str, topic_name: str, tmp_path: Path, members: list[Member]
) -> None:
    ConfluentClient(bootstrap).create_topic(topic_name, 6)
    group = f"g-{topic_name}"

    def start_member(name: str) -> Member:
        member = Member(client, bootstrap, topic_name, group, tmp_path / f"{name}.jsonl")
        members.append(member)
        return member

    first = [start_member(f"m{i}") for i in range(3)]

    def balanced() -> bool:
        assignments = [m.assignment() for m in first]
        if any(a is None or len(a) != 2 for a in assignments):
            return False
        return sorted(p for a in assignments for p in a or []) == list(range(6))

    eventually(balanced, "three members with two partitions each", timeout=60)

    expected = produce(bootstrap, topic_name, 0, 600)
    eventually(
        lambda: set().union(*(m.values() for m in first)) >= expected, "first 600", timeout=60
    )

    leaver, victim, survivor = first
    leaver.stop()
    victim.kill()
    expected |= produce(bootstrap, topic_name, 600, 600)

    # The killed member's partitions move only after its session times out.
    eventually(lambda: survivor.assignment() == list(range(6)), "survivor owning all", timeout=60)
    eventually(
        lambda: set().union(*(m.values() for m in first)) >= expected, "all 1200", timeout=60
    )
    assert set().union(*(m.values() for m in first)) == expected

    survivor.stop()
    assert survivor.events()[-1]["event"] == "closed"
    fresh = produce(bootstrap, topic_name, 1200, 300)
    late = start_member("late")
    eventually(lambda: late.values() >= fresh, "late member catching up", timeout=60)
    time.sleep(1)  # the point: a second in which nothing older may come
    # Committed offsets survived the members: nothing before them is read again.
    assert late.values() == fresh
