"""Live projector benchmark: ``agentlog projector`` under a steady load of model-only
turns (150 turns/s by default: the load of "Decide from the log"), each turn the eight
records the platform writes for one. Every second it samples the projector's lag (the
records on the log less those its positions have passed); it prints the
lag's median and maximum over the first and the second half of the run (flat: the
second half's are no higher), and the projector's CPU per record, and Postgres's.

    python -m tests.bench.bench_live [--rate TURNS_PER_S] [--seconds S] [--sessions N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from schemas import events
from schemas.base import Fact
from schemas.envelope import envelope, to_kafka
from streams.catalog import Catalog, spec_for
from tests.bench.bench_rebuild import CONFIG, PER_TURN, deployed, turn_facts
from tests.bench.cpu import cpu_by_process
from tests.e2e.conftest import applied_records
from tests.kafka import REPO
from tests.topics import produce_patiently


def log_end(consumer: Consumer, catalog: Catalog) -> int:
    """The records on the commands and events topics: their partitions' ends, summed."""
    total = 0
    for topic in (catalog.commands, catalog.events):
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        for p in partitions:
            total += consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    return total


class Load:
    """Records sent to the log, counted as the broker acknowledges them."""

    def __init__(self, bootstrap: str, catalog: Catalog) -> None:
        self.catalog = catalog
        self.delivered = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 2,
                "acks": "all",
                "on_delivery": self._acked,
            }
        )

    def send(self, fact: Fact, tenant: str) -> None:
        topic = self.catalog.name(spec_for(type(fact)))
        key, value, raw = to_kafka(envelope(fact, source="/bench", tenant_id=tenant))
        headers: list[tuple[str, str | bytes | None]] = list(raw)
        produce_patiently(self._producer, topic, value, key, headers)
        self._producer.poll(0)

    def _acked(self, error: object, _message: object) -> None:
        if error is None:
            self.delivered += 1

    def flush(self) -> None:
        self._producer.flush(120)


def run_load(load: Load, sessions: list[tuple[str, str, str]], rate: float, seconds: float) -> int:
    """Send turns at ``rate`` per second for ``seconds``, round-robin over the sessions;
    return how many turns were sent."""
    started = time.perf_counter()
    turns = int(rate * seconds)
    for n in range(turns):
        wait = started + n / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        tenant, agent, session = sessions[n % len(sessions)]
        for fact in turn_facts(session, agent, n // len(sessions)):
            load.send(fact, tenant)
    load.flush()
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=150.0, help="turns per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=500)
    args = parser.parse_args()
    tag = f"bench_live_{uuid.uuid4().hex[:8]}"
    with deployed(tag) as (broker, env, cli):
        load = Load(broker.bootstrap, Catalog(f"{tag}."))
        sessions = []
        for s in range(args.sessions):
            tenant, agent, session = f"tenant-{s % 50}", f"agent-{s % 50}", f"session-{s}"
            if s < 50:
                load.send(events.TenantCreated(tenant_id=tenant, display_name=tenant), tenant)
                load.send(events.AgentCreated(agent_id=agent, config=CONFIG), tenant)
            load.send(events.SessionCreated(session_id=session, agent_id=agent), tenant)
            sessions.append((tenant, agent, session))
        load.flush()
        projector = subprocess.Popen([*cli, "projector"], cwd=REPO, env=env)
        try:
            while applied_records(tag) < load.delivered:  # started, and caught up
                time.sleep(0.1)
            before, setup = cpu_by_process({"projector": projector.pid}), load.delivered
            sender = threading.Thread(
                target=run_load, args=(load, sessions, args.rate, args.seconds), daemon=True
            )
            started = time.perf_counter()
            sender.start()
            ends = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": tag})
            lags: list[int] = []
            while sender.is_alive():
                time.sleep(1.0)
                applied = applied_records(tag)  # first: the end read after it is no less
                lags.append(log_end(ends, load.catalog) - applied)
            ends.close()
            elapsed = time.perf_counter() - started
            while applied_records(tag) < load.delivered:
                time.sleep(0.05)
            caught_up_s = time.perf_counter() - started - elapsed
            after = cpu_by_process({"projector": projector.pid})
        finally:
            projector.terminate()
            projector.wait(60)
    records = load.delivered - setup
    half = len(lags) // 2
    first, second = lags[:half] or [0], lags[half:] or [0]
    print(
        f"live projector under load: {records / PER_TURN / elapsed:,.0f} turns/s"
        f" ({records / elapsed:,.0f} records/s) for {elapsed:.0f} s"
    )
    print(
        f"  lag, records: first half median {statistics.median(first):,.0f}"
        f" max {max(first):,}; second half median {statistics.median(second):,.0f}"
        f" max {max(second):,}; caught up {caught_up_s:.1f} s after the load ended"
    )
    print(
        f"  CPU per record: projector"
        f" {(after['projector'] - before['projector']) / records * 1e6:,.0f} µs,"
        f" Postgres {(after['postgres'] - before['postgres']) / records * 1e6:,.0f} µs"
        f" (over {records:,} records)"
    )


if __name__ == "__main__":
    main()
