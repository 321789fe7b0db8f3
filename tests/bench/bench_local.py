"""Local mode's benchmark: ``agentlog up`` on embedded Postgres and Redis.

1. Start time: from starting ``agentlog up`` to a gateway that answers ``/readyz`` 200,
   with embedded services: the first start (``initdb`` on an empty data directory) and
   later starts on the same data; beside the same on this machine's Postgres and Redis.
2. Turn overhead (dev model, ``turn.accepted`` -> ``turn.completed`` in the log) at a
   steady rate, on embedded Postgres and Redis and on this machine's, in alternating
   rounds of one run. The ratio machine / embedded is the share of the machine's speed
   that the embedded servers keep.
3. Idle: the CPU that ``agentlog up`` (on this machine's Postgres and Redis), the broker
   and Postgres use with no traffic, as a share of one core.

    python -m tests.bench.bench_local [--turns N] [--rate R] [--rounds K] [--idle S]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.bench.bench_platform import drive_turns, overheads, turn_times
from tests.bench.cpu import cpu_by_process
from tests.e2e.conftest import drop_schemas
from tests.kafka import REPO, BrokerProcess
from tests.processes import clean_environ
from tests.services import MACHINE_DATABASE_URL, MACHINE_REDIS_URL


class Up:
    """One ``agentlog up`` on the given services, timed from its start to ready."""

    machine_schemas: list[str] = []  # to drop from this machine's Postgres at the end

    def __init__(
        self,
        bootstrap: str,
        home: Path,
        database_url: str,
        redis_url: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.env = {
            **clean_environ(),
            "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AGENTLOG_TOPIC_PREFIX": f"local{uuid.uuid4().hex[:8]}.",
            "AGENTLOG_DATABASE_SCHEMA": f"local{uuid.uuid4().hex[:8]}",
            "AGENTLOG_DATABASE_URL": database_url,
            "AGENTLOG_REDIS_URL": redis_url,
            "AGENTLOG_DATA_DIR": str(home),
            "AGENTLOG_SECRETS_KEY_FILE": str(home / "secrets.key"),
            "AGENTLOG_GATEWAY_PORT": "0",
            "AGENTLOG_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = self.key = ""
        if database_url != "embedded":
            self.machine_schemas.append(self.env["AGENTLOG_DATABASE_SCHEMA"])

    def start(self) -> float:
        """Seconds from starting the process to a ready gateway."""
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentlog_cli", "up", "--no-broker"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            name, _, rest = raw.decode().strip().partition("  ")
            if name == "gateway":
                self.url = rest.split()[0]
            if name == "api key":
                self.key = rest.strip()
                break
        if not self.key:
            raise RuntimeError(f"agentlog up exited with {self.proc.wait()}")
        while httpx.get(f"{self.url}/readyz").status_code != 200:
            time.sleep(0.01)
        return time.monotonic() - started

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def sessions(self, api: httpx.Client, count: int) -> list[str]:
        """``count`` sessions of a dev-model agent."""
        agent = api.post("/v1/agents", json={"name": "bench", "model": "dev"}).json()
        return [
            api.post("/v1/sessions", json={"agent_id": agent["agent_id"]}).json()["session_id"]
            for _ in range(count)
        ]

    def overheads(self, bootstrap: str, turns: int, rate: float, sessions: int) -> list[float]:
        """accepted -> completed of ``turns`` turns at ``rate``, in ms."""
        api = self.client()
        ids = self.sessions(api, sessions)
        drive_turns(api, ids[:2], 20, 10)  # warm-up
        turn_ids, _, _ = drive_turns(api, ids, turns, rate)
        time.sleep(1.0)
        return overheads(turn_times(bootstrap, self.env["AGENTLOG_TOPIC_PREFIX"], set(turn_ids)))


def idle_shares(up: Up, broker: BrokerProcess, seconds: float) -> dict[str, float]:
    """Each process's share of one core over ``seconds`` with no traffic, once ready and
    settled."""
    assert up.proc is not None
    assert broker.proc is not None
    named = {"agentlog up": up.proc.pid, "broker": broker.proc.pid}
    time.sleep(5.0)  # past the start's own work
    before, started = cpu_by_process(named), time.monotonic()
    time.sleep(seconds)
    after, elapsed = cpu_by_process(named), time.monotonic() - started
    return {name: (after[name] - before[name]) / elapsed for name in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of turns")
    parser.add_argument("--starts", type=int, default=5, help="timed starts of each kind")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measured")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "broker").start()
        try:
            up = Up(broker.bootstrap, Path(tmp) / "idle", MACHINE_DATABASE_URL, MACHINE_REDIS_URL)
            up.start()
            try:
                shares = idle_shares(up, broker, args.idle)
            finally:
                up.stop()
            print(
                f"idle over {args.idle:g} s, share of one core: {sum(shares.values()):.1%} ("
                + ", ".join(f"{name} {share:.1%}" for name, share in shares.items())
                + ")",
                flush=True,
            )
            kinds = {
                "embedded": ("embedded", "embedded"),
                "machine": (MACHINE_DATABASE_URL, MACHINE_REDIS_URL),
            }
            first: list[float] = []
            starts: dict[str, list[float]] = {kind: [] for kind in kinds}
            for n in range(args.starts):
                for kind, (database, redis) in kinds.items():
                    home = Path(tmp) / f"{kind}-{n}"
                    up = Up(broker.bootstrap, home, database, redis)
                    (first if kind == "embedded" else starts[kind]).append(up.start())
                    up.stop()
                    if kind == "embedded":  # again, on the data the first start made
                        up = Up(broker.bootstrap, home, database, redis)
                        starts[kind].append(up.start())
                        up.stop()
            machine_start = statistics.median(starts["machine"])
            print(
                f"agentlog up -> ready gateway, median of {args.starts}: embedded services"
                f" {statistics.median(starts['embedded']):.2f} s"
                f" (first start, with initdb: {statistics.median(first):.2f} s);"
                f" this machine's Postgres and Redis {machine_start:.2f} s",
                flush=True,
            )

            p50s: dict[str, list[float]] = {kind: [] for kind in kinds}
            p99s: dict[str, list[float]] = {kind: [] for kind in kinds}
            for n in range(args.rounds):
                for kind, (database, redis) in kinds.items():
                    up = Up(broker.bootstrap, Path(tmp) / f"{kind}-{n}", database, redis)
                    up.start()
                    try:
                        spans = sorted(
                            up.overheads(broker.bootstrap, args.turns, args.rate, args.sessions)
                        )
                    finally:
                        up.stop()
                    p50s[kind].append(statistics.median(spans))
                    p99s[kind].append(spans[min(len(spans) - 1, int(0.99 * len(spans)))])
            embedded, machine = (statistics.median(p50s[kind]) for kind in kinds)
            print(
                f"turn overhead at {args.rate:g} turns/s, median of {args.rounds} rounds of"
                f" {args.turns}: embedded p50 {embedded:.1f} ms (p99"
                f" {statistics.median(p99s['embedded']):.1f}), machine p50 {machine:.1f} ms"
                f" (p99 {statistics.median(p99s['machine']):.1f}): embedded keeps"
                f" {machine / embedded:.0%} of the machine's speed (rounds: "
                + ", ".join(
                    f"{m / e:.0%}" for e, m in zip(p50s["embedded"], p50s["machine"], strict=True)
                )
                + ")",
                flush=True,
            )
        finally:
            broker.stop()
            for schema in Up.machine_schemas:
                drop_schemas(schema)


if __name__ == "__main__":
    main()
