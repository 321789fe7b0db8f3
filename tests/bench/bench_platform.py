"""Platform benchmark: per-turn overhead with the dev model, and gateway command intake.

1. Turn overhead: turns on the zero-latency dev model at a steady rate; for each turn,
   the time from ``turn.accepted`` to ``turn.completed`` as recorded in the log
   (CloudEvents ``time``, microseconds). Prints p50/p99.
2. Gateway intake: requests/s of ``POST /v1/sessions/{id}/turns`` (auth, validation,
   produce with acks=all), loaded by wrk, against a bare FastAPI endpoint parsing the
   same body, in the same run. Measured twice per round: with the roles behind the
   gateway paused (SIGSTOP), which isolates the intake path, and with them running. The
   bare endpoint is measured with the roles paused too: while they work off a round's
   turns they take the cores it would run on.

    python -m tests.bench.bench_platform [--turns N] [--rate R [R ...]]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from schemas import events
from schemas.base import Fact
from schemas.envelope import from_kafka
from tests.bench.cpu import cpu_by_process
from tests.kafka import REPO, BrokerProcess
from tests.processes import clean_environ
from tests.topics import read_all

BARE_APP = """
from fastapi import FastAPI
from pydantic import BaseModel

class TurnCreate(BaseModel):
    message: str

app = FastAPI()

@app.post("/turns", status_code=202)
async def create(body: TurnCreate) -> dict[str, str]:
    return {"status": "requested"}

if __name__ == "__main__":  # uvicorn's defaults, on any free port it prints
    import socket
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run([sock])
"""


ROLE_COMMANDS = (
    ["projector"],
    ["worker", "commands"],
    ["worker", "orchestrator"],
    ["worker", "model"],
    ["worker", "tool"],
    ["worker", "billing"],
    ["worker", "invoicer"],
    ["gateway"],
)


def start_platform(bootstrap: str, tag: str) -> tuple[list[subprocess.Popen[bytes]], str, str]:
    """One process per role, as deployed (the gateway apart from the workers)."""
    env = {
        **clean_environ(),
        "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTLOG_TOPIC_PREFIX": f"{tag}.",
        "AGENTLOG_DATABASE_SCHEMA": tag,
        "AGENTLOG_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
        "AGENTLOG_GATEWAY_PORT": "0",
        "AGENTLOG_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "agentlog_cli"]
    subprocess.run([*cli, "migrate"], cwd=REPO, env=env, check=True, capture_output=True)
    procs = [
        subprocess.Popen(
            [*cli, *role],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE if role == ["gateway"] else None,
            stderr=subprocess.DEVNULL,
        )
        for role in ROLE_COMMANDS
    ]
    gateway = procs[ROLE_COMMANDS.index(["gateway"])]
    assert gateway.stdout is not None
    url = gateway.stdout.readline().decode().split()[1]  # it prints "gateway <url>"
    key = subprocess.run(
        [*cli, "tenants", "create", "bench"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    return procs, url, key


def drive_turns(
    api: httpx.Client, sessions: list[str], turns: int, rate: float
) -> tuple[list[str], list[float], dict[str, tuple[float, float]]]:
    """Submit turns at a steady rate, each session one turn at a time; the turns' ids,
    each ``POST …/turns?wait=`` answer's latency in ms, and by turn id the wall-clock
    times (s) it was sent and answered."""
    ids: list[str] = []
    waits: list[float] = []
    walls: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()
    per_session = turns // len(sessions)
    interval = len(sessions) / rate

    def run(session_id: str, offset: float) -> None:
        time.sleep(offset)
        for n in range(per_session):
            started, sent = time.monotonic(), time.time()
            response = api.post(
                f"/v1/sessions/{session_id}/turns?wait=10", json={"message": f"bench turn {n}"}
            )
            answered = time.time()
            assert response.status_code == 200, response.text
            with lock:
                ids.append(response.json()["turn_id"])
                waits.append((time.monotonic() - started) * 1000)
                walls[ids[-1]] = (sent, answered)
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    threads = [threading.Thread(target=run, args=(s, i / rate)) for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids, waits, walls


def turn_times(bootstrap: str, prefix: str, turn_ids: set[str]) -> dict[str, dict[str, float]]:
    """By turn: the CloudEvents times (s) of its request, acceptance and completion."""
    stages: dict[type[Fact], str] = {
        events.TurnRequested: "requested",
        events.TurnAccepted: "accepted",
        events.TurnCompleted: "completed",
    }
    times: dict[str, dict[str, float]] = {t: {} for t in turn_ids}
    for topic in ("agentlog.commands", "agentlog.events"):
        for record in read_all(bootstrap, f"{prefix}{topic}"):
            env = from_kafka(record.key, record.value, list(record.headers))
            stage = stages.get(type(env.data))
            if stage is not None and env.data.turn_id in times:
                times[env.data.turn_id].setdefault(stage, env.time.timestamp())
    return times


def overheads(times: dict[str, dict[str, float]]) -> list[float]:
    """accepted -> completed of each turn that completed, in ms, in order."""
    return sorted(
        (t["completed"] - t["accepted"]) * 1000
        for t in times.values()
        if "accepted" in t and "completed" in t
    )


def wait_stages(times: dict[str, dict[str, float]], walls: dict[str, tuple[float, float]]) -> str:
    """The median of each stage of a ``?wait=`` answer, in ms: sent -> requested (the
    gateway records the command), -> accepted (the command handler), -> completed (the
    turn), -> answered (projected, notified, read and sent back)."""
    marks = ("sent", "requested", "accepted", "completed", "answered")
    spans: dict[str, list[float]] = {f"{a} -> {b}": [] for a, b in itertools.pairwise(marks)}
    for turn_id, (sent, answered) in walls.items():
        at = {**times.get(turn_id, {}), "sent": sent, "answered": answered}
        if all(m in at for m in marks):
            for a, b in itertools.pairwise(marks):
                spans[f"{a} -> {b}"].append((at[b] - at[a]) * 1000)
    return ", ".join(
        f"{name} {statistics.median(values):.1f}" for name, values in spans.items() if values
    )


def wrk(url: str, body: str, headers: dict[str, str], seconds: int) -> float:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = [[{body}]]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script.unlink()
    non2xx = [line for line in out.splitlines() if "Non-2xx" in line]
    if non2xx:
        raise RuntimeError(f"errors under load: {non2xx[0]}")
    return float(
        next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec"))
    )


def beside_peers(peers: list[dict[str, float]], p50: float, p99: float, cpu: float) -> None:
    """agentlog's model-only turns beside each peer, as ratios (agentlog / peer)."""
    print(f"  {'model-only turn vs':<52} {'p50':>12} {'p99':>12} {'CPU':>12}")
    for peer in peers:
        print(
            f"  {peer['name']:<52} {p50 / peer['p50_ms']:>11.2f}x {p99 / peer['p99_ms']:>11.2f}x"
            f" {cpu / peer['cpu_ms']:>11.2f}x",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[20.0, 50.0],
        help="turns per second; one run of --turns turns per rate",
    )
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--no-intake", action="store_true", help="turns only, no wrk runs")
    parser.add_argument("--peers", help="bench_peers' JSON: print agentlog's turns beside them")
    args = parser.parse_args()

    if shutil.which("wrk") is None and not args.no_intake:
        raise SystemExit("the intake benchmark needs wrk: apt-get install -y wrk")
    tag = f"bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data").start()
        platform, url, key = start_platform(broker.bootstrap, tag)
        bare_dir = Path(tmp) / "bare"
        bare_dir.mkdir()
        (bare_dir / "bare_app.py").write_text(BARE_APP)
        bare = subprocess.Popen(
            [sys.executable, "bare_app.py"], cwd=bare_dir, stdout=subprocess.PIPE
        )
        assert bare.stdout is not None
        bare_port = int(bare.stdout.readline())
        try:
            headers = {"Authorization": f"Bearer {key}"}
            api = httpx.Client(base_url=url, headers=headers, timeout=30)
            agent = api.post("/v1/agents", json={"name": "bench", "model": "dev"}).json()

            def new_sessions() -> list[str]:
                return [
                    api.post("/v1/sessions", json={"agent_id": agent["agent_id"]}).json()[
                        "session_id"
                    ]
                    for _ in range(args.sessions)
                ]

            drive_turns(api, new_sessions()[:2], 20, 10)  # warm-up
            named = {
                " ".join(cmd): proc.pid for cmd, proc in zip(ROLE_COMMANDS, platform, strict=True)
            }
            assert broker.proc is not None
            named["broker"] = broker.proc.pid
            for rate in args.rate:
                sessions = new_sessions()  # each rate starts from short conversations
                before = cpu_by_process(named)
                started = time.monotonic()
                turn_ids, waits, walls = drive_turns(api, sessions, args.turns, rate)
                elapsed = time.monotonic() - started
                time.sleep(1.0)  # the projections of the last turns
                after = cpu_by_process(named)
                times = turn_times(broker.bootstrap, f"{tag}.", set(turn_ids))
                spans = overheads(times)
                p50 = statistics.median(spans)
                p99 = spans[min(len(spans) - 1, int(0.99 * len(spans)))]
                waits.sort()
                print(
                    f"turn overhead (dev model, accepted -> completed) over {len(spans)} "
                    f"turns at {len(turn_ids) / elapsed:.0f} turns/s: p50 {p50:.1f} ms, "
                    f"p99 {p99:.1f} ms; POST turns?wait= answered: p50 "
                    f"{statistics.median(waits):.1f} ms, "
                    f"p99 {waits[min(len(waits) - 1, int(0.99 * len(waits)))]:.1f} ms",
                    flush=True,
                )
                print(f"  ?wait= by stage, p50 ms: {wait_stages(times, walls)}", flush=True)
                per_turn = {
                    name: (after[name] - before[name]) * 1000 / len(turn_ids) for name in after
                }
                cpu = sum(per_turn.values())
                print(
                    f"  CPU per turn: {cpu:.1f} ms ("
                    + ", ".join(f"{name} {ms:.1f}" for name, ms in per_turn.items())
                    + ")",
                    flush=True,
                )
                if args.peers:
                    beside_peers(json.loads(Path(args.peers).read_text()), p50, p99, cpu)

            if args.no_intake:
                return
            body = '{"message": "hello"}'
            json_headers = {**headers, "Content-Type": "application/json"}
            intake_url = f"{url}/v1/sessions/{sessions[-1]}/turns"
            bare_url = f"http://127.0.0.1:{bare_port}/turns"
            workers = platform[:-1]  # every role but the gateway
            rounds = []
            for _ in range(3):
                # The bare endpoint and the intake alone, with the roles behind the
                # gateway paused: they do not compete for the two cores (nor work off the
                # previous round's turns meanwhile); they catch up once resumed.
                for proc in workers:
                    proc.send_signal(signal.SIGSTOP)
                try:
                    bare_rps = wrk(bare_url, body, json_headers, args.seconds)
                    alone_rps = wrk(intake_url, body, json_headers, args.seconds)
                finally:
                    for proc in workers:
                        proc.send_signal(signal.SIGCONT)
                live_rps = wrk(intake_url, body, json_headers, args.seconds)
                rounds.append((alone_rps, live_rps, bare_rps))
            alone = statistics.median(r[0] / r[2] for r in rounds)
            live = statistics.median(r[1] / r[2] for r in rounds)
            print(
                f"gateway intake (POST turns, acks=all): "
                f"{statistics.median(r[0] for r in rounds):,.0f} req/s with the roles behind "
                f"it paused, {statistics.median(r[1] for r in rounds):,.0f} req/s with them "
                f"running, vs bare FastAPI {statistics.median(r[2] for r in rounds):,.0f} req/s: "
                f"{alone:.0%} / {live:.0%} (median ratio of 3 rounds: "
                + ", ".join(f"{r[0] / r[2]:.0%}/{r[1] / r[2]:.0%}" for r in rounds)
                + ")",
                flush=True,
            )
        finally:
            bare.terminate()
            for proc in platform:
                proc.terminate()
            for proc in platform:
                proc.wait(30)
            broker.stop()
            from tests.e2e.conftest import drop_schemas

            drop_schemas(tag)


if __name__ == "__main__":
    main()
