"""Crash safety: kill -9 workers (two replicas of some) and the projector at random points
across 200 turns.

Every turn completes; every model and tool call has exactly one result in the log (a
call cut off before its result was recorded may be performed again, but is recorded
once and billed once); and the projections equal a rebuild from offset 0.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from schemas import events
from schemas.envelope import from_kafka
from tests.e2e.conftest import Platform, ToolServer, drop_schemas, platform_env
from tests.e2e.test_turns import read_topic, setup_agent
from tests.kafka import REPO
from workers.providers.protocol_server import ModelServer

# Two replicas of the orchestrator and the model worker: their partitions move between
# live members as the others die and come back, so state kept across rebalances counts.
PROCESSES = {
    "projector": ["projector"],
    "commands": ["worker", "commands"],
    "orchestrator-1": ["worker", "orchestrator"],
    "orchestrator-2": ["worker", "orchestrator"],
    "model-1": ["worker", "model"],
    "model-2": ["worker", "model"],
    "tool": ["worker", "tool"],
    "gateway": ["gateway"],
}
VICTIMS = ("model-1", "model-2", "tool", "orchestrator-1", "orchestrator-2", "projector")


class Role:
    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.env = env
        self.log = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        args = PROCESSES[self.name]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentlog_cli", *args],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_during_200_turns_loses_and_repeats_nothing(
    bootstrap: str, tmp_path: Path, tool_server: ToolServer, model_server: ModelServer
) -> None:
    tag = f"crash_{random.getrandbits(40):010x}"
    env = {
        **platform_env(bootstrap, tag, model_server),
        "AGENTLOG_CONSUMER_SESSION_TIMEOUT_MS": "6000",
    }
    subprocess.run(
        [sys.executable, "-m", "agentlog_cli", "migrate"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    roles = {name: Role(name, env, tmp_path) for name in PROCESSES}
    try:
        for role in roles.values():
            role.start()
        key = subprocess.run(
            [sys.executable, "-m", "agentlog_cli", "tenants", "create", "c"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        url = f"http://127.0.0.1:{env['AGENTLOG_GATEWAY_PORT']}"
        api = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"})
        _wait_ready(api)
        # The model is the scripted provider (the dev rule over the OpenAI protocol), so
        # the real adapter is cut off by the kills too.
        agent = setup_agent(api, tool_server, model="openai:scripted")
        sessions = [
            api.post("/v1/sessions", json={"agent_id": agent["agent_id"]}).json()["session_id"]
            for _ in range(20)
        ]

        finished: dict[str, str] = {}
        errors: list[str] = []

        def drive(session_id: str, index: int) -> None:
            for n in range(10):
                message = (
                    f'call weather {{"city": "c{index}-{n}"}}'
                    if n % 2 == 0
                    else f"hello {index}-{n}"
                )
                try:
                    turn_id = _submit(api, session_id, message)
                    finished[turn_id] = _await_turn(api, turn_id)
                except Exception as exc:  # reported below with the rest
                    errors.append(f"{session_id}: {exc!r}")
                    return

        drivers = [threading.Thread(target=drive, args=(s, i)) for i, s in enumerate(sessions)]
        for d in drivers:
            d.start()
        # Kill a random victim every 2-5 s for as long as turns run, each at least twice.
        rng = random.Random(7)
        deadline = time.monotonic() + 400
        while any(d.is_alive() for d in drivers) and time.monotonic() < deadline:
            time.sleep(rng.uniform(2.0, 5.0))
            fewest = min(roles[v].kills for v in VICTIMS)
            candidates = [v for v in VICTIMS if roles[v].kills == fewest] if fewest < 2 else VICTIMS
            victim = rng.choice(candidates)
            roles[victim].kill()
            roles[victim].start()
        for d in drivers:
            d.join(10)
        assert not errors, errors[:5]
        assert len(finished) == 200
        assert Counter(finished.values()) == {"completed": 200}
        assert all(roles[v].kills >= 2 for v in VICTIMS), {v: roles[v].kills for v in VICTIMS}

        platform = Platform(url, key, env, roles["gateway"].proc, tmp_path / "gateway.log")  # type: ignore[arg-type]
        results: Counter[str] = Counter()
        requested_tools = set()
        failed_tools: dict[str, str] = {}
        for record in read_topic(platform, "agentlog.events"):
            env_ = from_kafka(record.key, record.value, list(record.headers))
            data = env_.data
            if isinstance(data, events.ModelCallCompleted | events.ModelCallFailed):
                results[f"model:{data.call_id}"] += 1
            if isinstance(data, events.ToolCallCompleted | events.ToolCallFailed):
                results[f"tool:{data.tool_call_id}"] += 1
            if isinstance(data, events.ToolCallFailed):
                failed_tools[data.tool_call_id] = data.code
            if isinstance(data, events.ToolCallRequested):
                requested_tools.add(data.tool_call_id)
        assert set(results.values()) == {1}, "a call's result was recorded twice"
        assert len([k for k in results if k.startswith("model:")]) == 300  # 100 x 2 + 100 x 1
        assert {k.split(":", 1)[1] for k in results if k.startswith("tool:")} == requested_tools

        usage_ids: dict[str, set[str]] = {}
        for record in read_topic(platform, "agentlog.usage"):
            env_ = from_kafka(record.key, record.value, list(record.headers))
            usage_ids.setdefault(env_.data.usage_id, set()).add(env_.id)
        assert len(usage_ids) == len(results), "every call billed"
        assert all(len(ids) == 1 for ids in usage_ids.values()), "a call billed twice"

        model_calls = Counter(r.headers["X-Agentlog-Call-Id"] for r in model_server.received)
        assert set(model_calls) == {k.split(":", 1)[1] for k in results if k.startswith("model:")}
        repeated_model = [c for c, n in model_calls.items() if n > 1]
        model_kills = roles["model-1"].kills + roles["model-2"].kills
        assert len(repeated_model) <= model_kills * len(sessions), repeated_model

        calls = Counter(
            r["headers"]["X-Agentlog-Tool-Call-Id"]
            for r in tool_server.requests
            if r["path"] == "/weather"
        )
        assert set(calls) <= requested_tools
        # A call the tool never saw can only have failed (a timeout under this load).
        unreached = requested_tools - set(calls)
        assert unreached <= set(failed_tools), {c: failed_tools.get(c) for c in unreached}
        repeated = [c for c, n in calls.items() if n > 1]
        # Only calls cut off by a tool-worker kill before their result was recorded may
        # run again: at most one in-flight call per session for each kill.
        assert len(repeated) <= roles["tool"].kills * len(sessions), repeated

        rebuild = subprocess.run(
            [sys.executable, "-m", "agentlog_cli", "projections", "rebuild", "core", "--no-swap"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert rebuild.returncode == 0, rebuild.stderr[-3000:]
        assert "verified identical" in rebuild.stdout
    finally:
        for role in roles.values():
            role.stop()
        drop_schemas(tag)


def _wait_ready(api: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if api.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("gateway not ready")


def _submit(api: httpx.Client, session_id: str, message: str) -> str:
    deadline = time.monotonic() + 120
    while True:
        response = api.post(f"/v1/sessions/{session_id}/turns", json={"message": message})
        if response.status_code == 202:
            return str(response.json()["turn_id"])
        if response.status_code == 409 and time.monotonic() < deadline:
            time.sleep(0.2)  # the previous turn's completion is not projected yet
            continue
        raise AssertionError(f"turn not accepted: {response.status_code} {response.text}")


def _await_turn(api: httpx.Client, turn_id: str) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        response = api.get(f"/v1/turns/{turn_id}")
        if response.status_code == 200:
            status = str(response.json()["status"])
            if status in ("completed", "failed", "rejected", "cancelled"):
                return status
        time.sleep(0.2)
    raise AssertionError(f"turn {turn_id} did not finish")
