"""Tracing's cost: ``agentlog up`` with spans exported over OTLP/HTTP to a local receiver
(``tests.otlp``, taking every request without decoding it, as a collector costs the
platform nothing) against the same with tracing off, in alternating rounds of one run:
every trace exported, and one in ten (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``).

1. Turn overhead (dev model, ``turn.accepted`` -> ``turn.completed`` in the log) at a
   steady rate.
2. Gateway intake: ``POST /v1/sessions/{id}/turns`` under wrk (16 connections).

The ratios off / on are the share of the untraced speed that tracing keeps.

    python -m tests.bench.bench_tracing [--turns N] [--rate R] [--rounds K] [--seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tests.bench.bench_local import Up
from tests.bench.bench_platform import wrk
from tests.e2e.conftest import drop_schemas
from tests.kafka import BrokerProcess
from tests.otlp import OtlpReceiver
from tests.services import MACHINE_DATABASE_URL, MACHINE_REDIS_URL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--seconds", type=int, default=5, help="of wrk per round")
    args = parser.parse_args()

    receiver = OtlpReceiver(decode=False).start()  # the platform's cost, not the receiver's
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    kinds: dict[str, dict[str, str]] = {
        "off": {},
        "every trace": exporting,
        "1 in 10 traces": {
            **exporting,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    }
    p50s: dict[str, list[float]] = {kind: [] for kind in kinds}
    intakes: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "broker").start()
        try:
            for n in range(args.rounds):
                for kind, extra in kinds.items():
                    home = Path(tmp) / f"{kind}-{n}"
                    up = Up(broker.bootstrap, home, MACHINE_DATABASE_URL, MACHINE_REDIS_URL, extra)
                    up.start()
                    try:
                        overheads = up.overheads(
                            broker.bootstrap, args.turns, args.rate, args.sessions
                        )
                        p50s[kind].append(statistics.median(overheads))
                        with up.client() as api:
                            (session,) = up.sessions(api, 1)
                        intakes[kind].append(
                            wrk(
                                f"{up.url}/v1/sessions/{session}/turns",
                                '{"message": "intake"}',
                                {
                                    "Authorization": f"Bearer {up.key}",
                                    "Content-Type": "application/json",
                                },
                                args.seconds,
                            )
                        )
                    finally:
                        up.stop()
        finally:
            broker.stop()
            receiver.stop()
            for schema in Up.machine_schemas:
                drop_schemas(schema)
    off, off_rps = statistics.median(p50s["off"]), statistics.median(intakes["off"])
    print(
        f"tracing off: turn overhead p50 {off:.1f} ms at {args.rate:g} turns/s (median of"
        f" {args.rounds} rounds of {args.turns}), gateway intake {off_rps:.0f} req/s (median"
        f" of {args.rounds} rounds of {args.seconds} s)",
        flush=True,
    )
    for kind in list(kinds)[1:]:
        on, on_rps = statistics.median(p50s[kind]), statistics.median(intakes[kind])
        print(
            f"exporting {kind} over OTLP/HTTP to a local receiver: turn overhead p50"
            f" {on:.1f} ms, keeps {off / on:.0%} (rounds: "
            + ", ".join(f"{a / b:.0%}" for a, b in zip(p50s["off"], p50s[kind], strict=True))
            + f"); intake {on_rps:.0f} req/s, keeps {on_rps / off_rps:.0%}",
            flush=True,
        )
    print(f"({receiver.bytes:,} bytes received in {receiver.requests} exports)", flush=True)


if __name__ == "__main__":
    main()
