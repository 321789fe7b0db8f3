"""Core projection benchmark: 1,000,000 events of model-only turns, folded by a live
``agentlog projector`` (the roles' FastStream subscriber) and then rebuilt from offset 0
by ``agentlog projections rebuild core`` (which verifies every table identical to the
live one), each timed. The live projector folds the commands first, untimed, then
the events, timed (a turn's row is the same in either order).

    python -m tests.bench.bench_rebuild [--events N] [--sessions S]

Each turn is what the platform records for a model-only turn: ``TurnRequested`` on the
commands topic; ``TurnAccepted``, ``TurnStarted``, ``ModelCallRequested``,
``ModelCallCompleted``, two ``MessageAppended`` and ``TurnCompleted`` on the events
topic. Records are produced with confluent-kafka beforehand (not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from projections.secrets import new_key
from schemas import events
from schemas.base import Fact
from schemas.envelope import envelope, to_kafka
from schemas.values import MessageValue, UsageValue
from streams.catalog import Catalog, spec_for
from streams.partitions import LogReader
from tests.bench.cpu import cpu_by_process
from tests.e2e.conftest import DATABASE_URL, applied_records, drop_schemas
from tests.kafka import REPO, BrokerProcess
from tests.processes import clean_environ
from tests.topics import produce_patiently

CONFIG = events.AgentConfig(name="bench", model="dev")
USAGE = UsageValue(input_tokens=12, output_tokens=4)
PER_TURN = 8


def turn_facts(session: str, agent: str, n: int) -> list[Fact]:
    turn = f"{session}-t{n}"
    question = MessageValue(role="user", content=f"question {n}")
    answer = MessageValue(role="assistant", content=f"echo: question {n}")
    history = [MessageValue(role="user", content=f"question {n - 1}")] if n else []
    call = f"{turn}-c1"
    return [
        events.TurnRequested(session_id=session, turn_id=turn, message=question.content or ""),
        events.TurnAccepted(
            session_id=session,
            turn_id=turn,
            agent_id=agent,
            agent_version=1,
            config=CONFIG,
            tools=[],
            history=history,
            message=question.content or "",
        ),
        events.TurnStarted(session_id=session, turn_id=turn),
        events.ModelCallRequested(
            session_id=session,
            turn_id=turn,
            call_id=call,
            step=1,
            model="dev",
            agent_id=agent,
            agent_version=1,
            messages=[*history, question],
            tools=[],
        ),
        events.ModelCallCompleted(
            session_id=session,
            turn_id=turn,
            call_id=call,
            step=1,
            text=answer.content or "",
            tool_calls=[],
            usage=USAGE,
        ),
        events.MessageAppended(
            session_id=session, turn_id=turn, message_id=f"{turn}-m1", message=question
        ),
        events.MessageAppended(
            session_id=session, turn_id=turn, message_id=f"{turn}-m2", message=answer
        ),
        events.TurnCompleted(
            session_id=session, turn_id=turn, message_id=f"{turn}-m2", usage=USAGE, steps=1
        ),
    ]


def produce(bootstrap: str, catalog: Catalog, count: int, sessions: int, topic: str) -> float:
    """Those of about ``count`` records that go to ``topic``: tenants, agents and
    sessions, then turns round-robin."""
    started = time.perf_counter()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})

    def send(fact: Fact, tenant: str) -> None:
        if catalog.name(spec_for(type(fact))) != topic:
            return
        key, value, raw = to_kafka(envelope(fact, source="/bench", tenant_id=tenant))
        headers: list[tuple[str, str | bytes | None]] = list(raw)
        produce_patiently(producer, topic, value, key, headers)

    opened: list[tuple[str, str, str]] = []
    for s in range(sessions):
        tenant, agent, session = f"tenant-{s % 100}", f"agent-{s % 100}", f"session-{s}"
        if s < 100:
            send(events.TenantCreated(tenant_id=tenant, display_name=tenant), tenant)
            send(events.AgentCreated(agent_id=agent, config=CONFIG), tenant)
        send(events.SessionCreated(session_id=session, agent_id=agent), tenant)
        opened.append((tenant, agent, session))
    turns = max(1, (count - sessions) // PER_TURN // sessions)
    for n in range(turns):
        for tenant, agent, session in opened:
            for fact in turn_facts(session, agent, n):
                send(fact, tenant)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    args = parser.parse_args()
    tag = f"bench_rebuild_{uuid.uuid4().hex[:8]}"
    with deployed(tag) as (broker, env, cli):
        catalog = Catalog(f"{tag}.")
        # The commands first, untimed; then the events, folded live and timed.
        produced_s = produce(
            broker.bootstrap, catalog, args.events, args.sessions, catalog.commands
        )
        commands = asyncio.run(_records(broker.bootstrap, catalog))
        fold(cli, env, tag, commands)
        produced_s += produce(broker.bootstrap, catalog, args.events, args.sessions, catalog.events)
        total = asyncio.run(_records(broker.bootstrap, catalog))
        live = fold(cli, env, tag, total)
        started = time.perf_counter()
        rebuilt = subprocess.run(
            [*cli, "projections", "rebuild", "core", "--no-swap"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if rebuilt.returncode != 0:
            raise SystemExit(f"the rebuild failed:\n{rebuilt.stdout}{rebuilt.stderr[-3000:]}")
        rebuild_s = time.perf_counter() - started
    print(f"core projection: {total:,} records ({args.sessions:,} sessions, model-only turns)")
    print(f"  produced in                      {produced_s:6.1f} s (not measured)")
    rate = (total - commands) / live.seconds
    print(f"  live projector, the events       {live.seconds:6.1f} s ({rate:,.0f} records/s)")
    print(
        f"    CPU per record: projector {live.cpu_s / live.records * 1e6:,.0f} µs,"
        f" Postgres {live.postgres_s / live.records * 1e6:,.0f} µs"
        f" (over {live.records:,} records, once started)"
    )
    print(
        f"  agentlog projections rebuild core {rebuild_s:6.1f} s ({total / rebuild_s:,.0f}"
        " records/s; verified identical; target <= 30 s)"
    )
    print("  the rebuild said:")
    for line in rebuilt.stdout.splitlines():
        if line.startswith("rebuild:"):
            print(f"    {line}")


@contextlib.contextmanager
def deployed(
    tag: str, **settings: str
) -> Iterator[tuple[BrokerProcess, dict[str, Any], list[str]]]:
    """A broker of the benchmark's own (in a temporary directory), the environment of
    its ``agentlog`` processes (``bench_env``) and the command that runs them, with the
    schemas migrated; afterwards the broker is stopped and the schemas dropped."""
    with tempfile.TemporaryDirectory() as data:
        broker = BrokerProcess(Path(data) / "data").start()
        env = bench_env(broker.bootstrap, tag, **settings)
        cli = [sys.executable, "-m", "agentlog_cli"]
        try:
            subprocess.run([*cli, "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
            yield broker, env, cli
        finally:
            broker.stop()
            drop_schemas(tag)


def bench_env(bootstrap: str, tag: str, **settings: str) -> dict[str, Any]:
    """The environment of a benchmark's ``agentlog`` processes: its broker, and topics
    and a schema named by ``tag``."""
    return {
        **clean_environ(),
        "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTLOG_TOPIC_PREFIX": f"{tag}.",
        "AGENTLOG_DATABASE_SCHEMA": tag,
        "AGENTLOG_DATABASE_URL": DATABASE_URL,
        "AGENTLOG_LOG_LEVEL": "WARNING",
        "AGENTLOG_SECRETS_KEY": new_key(),  # not the working tree's .agentlog/
        **settings,
    }


@dataclass
class Fold:
    """A live projector's run: its seconds, and its CPU seconds (and Postgres's) over
    the records it applied once it had started, with how many those were."""

    seconds: float
    cpu_s: float = 0.0
    postgres_s: float = 0.0
    records: int = 0


def fold(cli: list[str], env: dict[str, Any], schema: str, records: int) -> Fold:
    """Run ``agentlog projector`` until it has applied ``records``."""
    started = time.perf_counter()
    projector = subprocess.Popen([*cli, "projector"], cwd=REPO, env=env)
    try:
        first = applied_records(schema)
        while (applied := applied_records(schema)) == first < records:  # starting
            time.sleep(0.05)
        before = cpu_by_process({"projector": projector.pid})
        while (done := applied_records(schema)) < records:
            time.sleep(0.5)
        after = cpu_by_process({"projector": projector.pid})
        return Fold(
            time.perf_counter() - started,
            after["projector"] - before["projector"],
            after["postgres"] - before["postgres"],
            max(done - applied, 1),
        )
    finally:
        projector.terminate()
        projector.wait(60)


async def _records(bootstrap: str, catalog: Catalog) -> int:
    """How many records the core projection reads: the commands' and events' ends."""
    reader = await LogReader(bootstrap).start()
    try:
        tps = [
            tp
            for topic in (catalog.commands, catalog.events)
            for tp in await reader.partitions(topic)
        ]
        return sum((await reader.ends(tps)).values())
    finally:
        await reader.stop()


if __name__ == "__main__":
    main()
