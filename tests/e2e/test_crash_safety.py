"""Crash safety: SIGKILL every role (the broker, the gateway, the command handler, two
orchestrators, two model workers, the tool worker, the projector and the billing
projector) at random points
while turns run, and prove that nothing is lost and no effect is repeated beyond what
the kills explain.

What "exactly once" means on the topics, counted over records (offsets), not over
de-duplicated event ids:

- Every requested model call (``call_id``) and tool call (``tool_call_id``) has result
  records, and all of them carry ONE event id and one payload; so does its
  ``UsageRecorded`` (by ``call_id``), whose cause is the request the result names.
  Several records of that one event id are allowed: a writer killed between publishing
  and committing publishes the same event again, and the projection applies an event
  id once. Two event ids, or two payloads under one id, are two results of one call:
  not allowed. No call ends as ``ModelCallFailed`` or ``ToolCallFailed``.
- The model and tool servers may receive a call again only after a kill hit it in
  flight: the process performing it, or the broker, died after the call started and
  before its result was recorded. A call whose performer died that way must be received
  again, or its result could not exist. So repeats are bounded by the calls kills hit.
- Every turn completes with exactly the answer the scripted model gives; a turn request
  retried with its Idempotency-Key creates no second turn.
- After every kill, probe turns on every partition complete within ``RECOVERY_S`` of the
  restart; the projections equal a rebuild from offset 0, table for table, and the
  billing read models a billing replay.
- No double billing: the billing ledger's model tokens per tenant equal the model
  server's own count of the tokens it served, each call counted once (by call id).

The broker is the test's own (``broker_factory``), since it is killed too; the suite's
shared broker is never touched.

The checks can fail: ``test_injected_double_perform_is_caught`` turns on
``AGENTLOG_TEST_FAULT=perform-twice`` (the effect workers perform again requests whose
result is in the log) and the checker must report it, and
``test_rebuild_names_a_tampered_table`` changes a live row and the rebuild must name
its table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Protocol

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.rebuild import table_hashes
from schemas import events
from schemas.envelope import Envelope, from_kafka
from streams.catalog import Catalog, partitions_of
from tests.e2e.conftest import DATABASE_URL, Platform, drop_schemas, platform_env
from tests.eventually import NotYetError, eventually
from tests.kafka import REPO, BrokerProcess
from tests.topics import read_all
from workers.providers.base import CALL_ID_HEADER, ModelRequest
from workers.providers.protocol_server import ModelServer, Reply

TOOL_CALL_ID_HEADER = "X-Agentlog-Tool-Call-Id"
SESSION_TIMEOUT_MS = 6000
# A role killed -9 holds its partitions until its session times out (6 s); the
# rebalance that follows waits up to the rebalance timeout (= the session timeout, 6 s)
# for the other members; after a broker restart groups form after the initial delay
# (6 s, see the broker below); a role restarts in 2-4 s on two busy cores, and a probe
# turn (two model calls and a tool call) takes 2-5 s under this load. 30 s is about
# twice the sum of the worst cases.
RECOVERY_S = 30.0
# Paced so that a kill can land mid-call: a tool-call answer (5 frames) takes ~0.45 s, a
# final answer (10-13 frames) ~0.8 s; the tool answers in 100-300 ms.
MODEL_STALL_S = 0.15
MODEL_FRAME_DELAY_S = 0.06
TOOL_DELAY_S = (0.1, 0.3)
# A result is recorded once the broker acknowledged it, which a broker kill delays until
# the restart: a call counts as in flight at a broker kill until its result's creation
# time plus this. A role kill needs no slack: a dead process cannot retry a produce.
BROKER_ACK_SLACK_S = 2.0
DRIVERS = 2  # sessions per partition
MIN_TURNS = 100

ROLE_ARGS = {
    "projector": ["projector"],
    "commands": ["worker", "commands"],
    "orchestrator-1": ["worker", "orchestrator"],
    "orchestrator-2": ["worker", "orchestrator"],
    "model-1": ["worker", "model"],
    "model-2": ["worker", "model"],
    "tool": ["worker", "tool"],
    "billing": ["worker", "billing"],
    "gateway": ["gateway"],
}
# Kills per victim: every role twice, the effect workers (whose kills can repeat calls)
# three times.
KILLS = {name: 2 for name in (*ROLE_ARGS, "broker")} | {"model-1": 3, "model-2": 3, "tool": 3}


# -- what the servers saw and what the test did -----------------------------------------


@dataclass
class Call:
    """A request a model or tool server received: which call, from which role, and when
    (wall clock) it started and its answer ended."""

    call_id: str
    sender: str
    started: float
    ended: float | None = None


@dataclass(frozen=True)
class Kill:
    role: str
    at: float  # wall clock, once the process was dead


def _starting(
    calls: list[Call], lock: threading.Lock, within: float, sender: str | None = None
) -> bool:
    since = time.time() - within
    with lock:
        return any(
            c.ended is None and c.started > since and sender in (None, c.sender)
            for c in reversed(calls[-50:])
        )


class PacedModelServer(ModelServer):
    """The dev model's rule over the OpenAI protocol, paced. Each model worker's base URL
    names its role (``/model-1/v1``), so every call is recorded with its sender."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self._calls_lock = threading.Lock()

    def _next(self, request: ModelRequest) -> Reply:
        reply = super()._next(request)
        return replace(reply, stall_s=MODEL_STALL_S, chunk_delay_s=MODEL_FRAME_DELAY_S)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler_class()
        server = self

        def do_POST(handler: BaseHTTPRequestHandler) -> None:
            sender = handler.path.split("/")[1]
            call = Call(handler.headers.get(CALL_ID_HEADER, ""), sender, time.time())
            with server._calls_lock:
                server.calls.append(call)
            try:
                base.do_POST(handler)  # type: ignore[attr-defined]
            finally:
                call.ended = time.time()

        return type("PacedHandler", (base,), {"do_POST": do_POST})

    def starting(self, sender: str | None = None) -> bool:
        """Has a call (of ``sender``) begun in the last 0.15 s and not ended yet?"""
        return _starting(self.calls, self._calls_lock, 0.15, sender)


def forecast(city: str, visit: int | None = None) -> str:
    """The weather tool's answer: a function of the city only, or with ``visit`` also of
    how often the call came (so that a repeated call shows in its result)."""
    digest = zlib.crc32(city.encode())
    answer: dict[str, Any] = {
        "city": city,
        "forecast": ("sunny", "rain", "fog", "snow")[digest % 4],
        "celsius": digest % 35,
    }
    if visit is not None:
        answer["visit"] = visit
    return json.dumps(answer)


class PacedToolServer:
    """``POST /weather`` answers ``forecast(city)`` after 100-300 ms (the delay derived
    from the call id, so it is the same on a repeat)."""

    def __init__(self, count_visits: bool = False) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                call_id = self.headers.get(TOOL_CALL_ID_HEADER, "")
                call = Call(call_id, "tool", time.time())
                with server._lock:
                    server.calls.append(call)
                    visit = sum(c.call_id == call_id for c in server.calls)
                low, high = TOOL_DELAY_S
                time.sleep(low + (high - low) * (zlib.crc32(call_id.encode()) % 100) / 100)
                answer = forecast(str(body.get("city")), visit if count_visits else None)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(answer.encode())
                except OSError:
                    pass  # the tool worker was killed meanwhile
                finally:
                    call.ended = time.time()

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> PacedToolServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def starting(self) -> bool:
        """Has a call begun in the last 0.03 s and not ended yet?"""
        return _starting(self.calls, self._lock, 0.03)


# -- the checker ------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the checker found: problems as (what, detail), empty when exactly once."""

    problems: list[tuple[str, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def report(self, what: str, detail: str) -> None:
        self.problems.append((what, detail))

    def kinds(self) -> Counter[str]:
        return Counter(what for what, _ in self.problems)


@dataclass(frozen=True)
class CallKind:
    name: str
    request: type[Any]
    completed: type[Any]
    failed: type[Any]
    id_field: str


CALL_KINDS = (
    CallKind(
        "model",
        events.ModelCallRequested,
        events.ModelCallCompleted,
        events.ModelCallFailed,
        "call_id",
    ),
    CallKind(
        "tool",
        events.ToolCallRequested,
        events.ToolCallCompleted,
        events.ToolCallFailed,
        "tool_call_id",
    ),
)
_TURN_ENDS = (events.TurnCompleted, events.TurnFailed, events.TurnCancelled, events.TurnRejected)


def _one_event(verdict: Verdict, what: str, envs: list[Envelope[Any]]) -> None:
    """All records of one thing carry one event id and one payload."""
    ids = {env.id for env in envs}
    if len(ids) > 1:
        verdict.report("two event ids", f"{what}: {sorted(ids)}")
    for event_id in ids:
        payloads = [env.data for env in envs if env.id == event_id]
        if any(p != payloads[0] for p in payloads[1:]):
            verdict.report(f"different payloads ({what.split()[0]})", f"{what}: {payloads}")


def _in_flight(kill: Kill, call: Call, until: float) -> bool:
    """Was ``call``'s sender (or the broker) killed after the call started and before its
    result was recorded (at ``until``)?"""
    if kill.role == "broker":
        return call.started < kill.at < until + BROKER_ACK_SLACK_S
    return kill.role == call.sender and call.started < kill.at < until


def _check_calls(
    verdict: Verdict,
    kind: CallKind,
    envs: list[Envelope[Any]],
    received: list[Call],
    kills: list[Kill],
) -> dict[str, str]:
    """One kind of call: results on the log against what its server received. Returns
    the calls performed, by the event id of their request."""
    requests: dict[str, list[Envelope[Any]]] = defaultdict(list)
    results: dict[str, list[Envelope[Any]]] = defaultdict(list)
    for env in envs:
        if isinstance(env.data, kind.request):
            requests[getattr(env.data, kind.id_field)].append(env)
        elif isinstance(env.data, kind.completed | kind.failed):
            results[getattr(env.data, kind.id_field)].append(env)
    for call_id, found in requests.items():
        _one_event(verdict, f"{kind.name} request {call_id}", found)
    for call_id in sorted(set(results) - set(requests)):
        verdict.report("unrequested result", f"{kind.name} call {call_id}")
    for call_id in sorted(set(requests) - set(results)):
        verdict.report("no result", f"{kind.name} call {call_id}")
    performed: dict[str, str] = {}
    recorded: dict[str, float] = {}  # when a call's result was first made
    for call_id, found in results.items():
        _one_event(verdict, f"{kind.name} result {call_id}", found)
        performed[found[0].causation_id] = call_id
        recorded[call_id] = min(env.time.timestamp() for env in found)
        for env in found:
            if isinstance(env.data, kind.failed):
                verdict.report(f"failed ({kind.name})", f"{call_id}: {env.data}")
    by_call: dict[str, list[Call]] = defaultdict(list)
    for call in sorted(received, key=lambda c: c.started):
        by_call[call.call_id].append(call)
    for call_id in sorted(set(by_call) - set(requests)):
        verdict.report("unrequested call", f"the {kind.name} server got {call_id}")
    for call_id in sorted(set(results) - set(by_call)):
        verdict.report("never performed", f"{kind.name} call {call_id} has a result")

    hits = verdict.figures.setdefault("hits", set())
    for n, kill in enumerate(kills):
        for call in received:
            if not _in_flight(kill, call, recorded.get(call.call_id, float("inf"))):
                continue
            hits.add((n, f"{kind.name}:{call.call_id}"))
            # Its sender died before the result existed: someone must have called again.
            if kill.role != "broker" and not any(
                c.started > kill.at for c in by_call[call.call_id]
            ):
                verdict.report(
                    f"not performed again ({kind.name})",
                    f"{call.call_id} was cut off by killing {kill.role} at {kill.at:.3f}",
                )
    repeats = 0
    for call_id, calls in by_call.items():
        until = recorded.get(call_id, float("inf"))
        for i, again in enumerate(calls[1:], start=1):
            repeats += 1
            if not any(
                _in_flight(kill, before, until) and kill.at < again.started
                for before in calls[:i]
                for kill in kills
            ):
                verdict.report(
                    f"repeat without a kill ({kind.name})",
                    f"{call_id} came again from {again.sender} at {again.started:.3f}, after "
                    + ", ".join(f"{c.sender} at {c.started:.3f}" for c in calls[:i]),
                )
    verdict.figures.setdefault("repeats", {})[kind.name] = repeats
    verdict.figures.setdefault("calls with duplicate result records", {})[kind.name] = sum(
        len(found) > 1 for found in results.values()
    )
    return performed


def check_exactly_once(
    event_records: list[Any],
    usage_records: list[Any],
    model_calls: list[Call],
    tool_calls: list[Call],
    kills: list[Kill],
    turn_ids: set[str],
) -> Verdict:
    """Check the raw records of the events and usage topics against what the servers
    received, which processes were killed when, and the turns the clients started (see
    the module docstring for what is allowed)."""
    verdict = Verdict()
    envs = [from_kafka(r.key, r.value, list(r.headers)) for r in event_records]
    usage_envs = [from_kafka(r.key, r.value, list(r.headers)) for r in usage_records]
    performed: dict[str, str] = {}
    for kind, received in zip(CALL_KINDS, (model_calls, tool_calls), strict=True):
        performed |= _check_calls(verdict, kind, envs, received, kills)

    usage: dict[str, list[Envelope[Any]]] = defaultdict(list)
    for env in usage_envs:
        usage[env.data.call_id].append(env)
    for usage_id, found in usage.items():
        _one_event(verdict, f"usage {usage_id}", found)
        causes = {env.causation_id for env in found}
        if {performed.get(cause) for cause in causes} != {usage_id}:
            verdict.report("usage of another request", f"usage {usage_id} caused by {causes}")
    for call_id in sorted(set(performed.values()) - set(usage)):
        verdict.report("not billed", f"call {call_id} has no usage record")
    for usage_id in sorted(set(usage) - set(performed.values())):
        verdict.report("billed without a result", f"usage {usage_id}")

    accepted: dict[str, list[Envelope[Any]]] = defaultdict(list)
    ended: dict[str, list[Envelope[Any]]] = defaultdict(list)
    for env in envs:
        if isinstance(env.data, events.TurnAccepted):
            accepted[env.data.turn_id].append(env)
        elif isinstance(env.data, _TURN_ENDS):
            ended[env.data.turn_id].append(env)
    if set(accepted) != turn_ids or set(ended) != turn_ids:
        verdict.report(
            "turns",
            f"on the log {len(accepted)} accepted, {len(ended)} ended;"
            f" the clients started {len(turn_ids)}",
        )
    for turn_id, found in accepted.items():
        _one_event(verdict, f"turn {turn_id} acceptance", found)
    for turn_id, found in ended.items():
        _one_event(verdict, f"turn {turn_id} end", found)
        if not all(isinstance(env.data, events.TurnCompleted) for env in found):
            verdict.report("turn not completed", f"{turn_id}: {found[0].data}")

    hits: set[tuple[int, str]] = verdict.figures.pop("hits")
    repeats = sum(verdict.figures["repeats"].values())
    if repeats > len(hits):
        verdict.report("repeats", f"{repeats} exceed the {len(hits)} in-flight calls kills hit")
    verdict.figures = {
        "records": dict(sorted(Counter(type(e.data).__name__ for e in envs + usage_envs).items())),
        "kills": dict(Counter(k.role for k in kills)),
        "kills that hit an in-flight call": dict(
            Counter(kills[n].role for n in {n for n, _ in hits})
        ),
        "in-flight calls hit": len(hits),
        **verdict.figures,
    }
    return verdict


# -- processes --------------------------------------------------------------------------


class Victim(Protocol):
    name: str

    def start(self) -> None: ...

    def kill(self) -> float: ...

    def stop(self) -> None: ...


class Role:
    """One platform role in its own process (``python -m agentlog_cli ...``)."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.env = env
        self.log = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""  # the gateway's, once it started

    def start(self) -> None:
        serves = self.name == "gateway"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentlog_cli", *ROLE_ARGS[self.name]],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE if serves else subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        if serves:
            # It prints "gateway <url>" once bound: the first start takes any free port,
            # a restart the same one, so clients find it again.
            assert self.proc.stdout is not None
            printed = self.proc.stdout.readline().decode().split()
            assert printed[:1] == ["gateway"], f"the gateway did not start: {printed}"
            self.url = printed[1]
            self.env["AGENTLOG_GATEWAY_PORT"] = self.url.rsplit(":", 1)[1]

    def kill(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return time.time()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class BrokerRole:
    """The test's private broker as a victim: restarted on its port and data."""

    name = "broker"

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker

    def start(self) -> None:
        self.broker.start()

    def kill(self) -> float:
        self.broker.kill()
        return time.time()

    def stop(self) -> None:
        if self.broker.proc is not None:
            self.broker.stop()


def role_env(base: dict[str, str], name: str, model_url: str) -> dict[str, str]:
    env = {**base, "AGENTLOG_TOOL_ALLOWED_NETWORKS": "127.0.0.0/8"}
    if name.startswith("model"):
        env["AGENTLOG_OPENAI_BASE_URL"] = f"{model_url}/{name}/v1"  # names the sender
    return env


def crash_env(bootstrap: str, tag: str, models: ModelServer) -> dict[str, str]:
    return {
        **platform_env(bootstrap, tag, models),
        "AGENTLOG_CONSUMER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        # No retries, and no timeout that a paced call could reach: a call the server
        # receives twice can only be a crash's doing.
        "AGENTLOG_MODEL_TIMEOUT_S": "60",
        "AGENTLOG_MODEL_MAX_RETRIES": "0",
    }


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agentlog_cli", *args],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


# -- clients ----------------------------------------------------------------------------


class Client:
    """A client that outlives outages: a request that got no answer, or a 5xx, is sent
    again until ``deadline``; a turn is sent again with its Idempotency-Key.
    ``attempts`` is how often the last request was sent; ``posting`` counts the turn
    requests in flight across clients (a gateway kill aims at one)."""

    posting: ClassVar[int] = 0
    resent: ClassVar[int] = 0  # requests sent again, across clients
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str, key: str, abort: threading.Event) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=10, headers={"Authorization": f"Bearer {key}"}
        )
        self.abort = abort
        self.attempts = 0

    @classmethod
    def _posting(cls, change: int) -> None:
        with cls._lock:
            cls.posting += change

    def send(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response:
        self.attempts = 0

        def answered() -> httpx.Response:
            if self.abort.is_set():
                raise RuntimeError("aborted")
            self.attempts += 1
            if method == "POST":
                self._posting(1)
            if self.attempts > 1:
                with self._lock:
                    Client.resent += 1
            try:
                response = self.http.request(method, path, **kwargs)
                if response.status_code < 500:
                    return response
                failure = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:
                failure = repr(exc)
            finally:
                if method == "POST":
                    self._posting(-1)
            raise AssertionError(f"no answer: {failure}")  # not yet: sent again

        # Sent again every 0.2 s, as before: the resends are the load's, and its figures'.
        left = max(deadline - time.monotonic(), 0)
        return eventually(answered, f"{method} {path} answered", timeout=left, poll=0.2)


@dataclass
class Turn:
    key: str
    message: str
    expected: str
    turn_id: str = ""
    status: str | None = None
    answer: str | None = None
    sends: int = 0
    seconds: float = 0.0


def scripted_turn(label: str, tool: bool, visit: int | None = None) -> tuple[str, str]:
    """A turn's message and the answer the dev rule gives to it."""
    if tool:
        return (
            f'call weather {{"city": "{label}"}}',
            f"tool weather returned: {forecast(label, visit)}",
        )
    return f"hello {label}", f"echo: hello {label}"


ENDED = ("completed", "failed", "rejected", "cancelled")


def run_turn(
    client: Client, session_id: str, key: str, message: str, expected: str, timeout: float
) -> Turn:
    """Send a turn (again, with its key, until it is accepted) and wait for its end."""
    turn = Turn(key, message, expected)
    started = time.monotonic()
    deadline = started + timeout
    response = client.send(
        "POST",
        f"/v1/sessions/{session_id}/turns",
        deadline,
        json={"message": message},
        headers={"Idempotency-Key": key},
    )
    turn.sends = client.attempts
    assert response.status_code in (200, 202), response.text
    turn.turn_id = turn_id = str(response.json()["turn_id"])

    def ended() -> httpx.Response:
        """The turn's answer once it has ended, or a refusal (raised below at once)."""
        response = client.send("GET", f"/v1/turns/{turn_id}", deadline)
        if response.status_code == 200:
            assert response.json()["status"] in ENDED, response.json()["status"]
        else:
            assert response.status_code != 404, "not projected yet"
        return response

    # Every 0.1 s, as before: the drivers' looks are part of the load the kills fall on.
    left = max(deadline - time.monotonic(), 0)
    what = f"turn {turn_id} ({key}) to finish in {timeout} s"
    response = eventually(ended, what, timeout=left, poll=0.1)
    if response.status_code != 200:
        raise AssertionError(f"turn {turn_id}: {response.status_code} {response.text}")
    turn.status, turn.answer = response.json()["status"], response.json()["answer"]
    turn.seconds = time.monotonic() - started
    return turn


def wait_ready(client: Client) -> None:
    response = client.send("GET", "/readyz", time.monotonic() + 60)
    assert response.status_code == 200, response.text


def setup_agent(client: Client, tool_url: str) -> str:
    deadline = time.monotonic() + 60
    tool = client.send(
        "POST",
        "/v1/tools",
        deadline,
        json={
            "name": "weather",
            "url": f"{tool_url}/weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "timeout_s": 10,
        },
    )
    assert tool.status_code == 201, tool.text
    agent = client.send(
        "POST",
        "/v1/agents",
        deadline,
        json={"name": "crash", "model": "openai:scripted", "tools": ["weather"]},
    )
    assert agent.status_code == 201, agent.text
    return str(agent.json()["agent_id"])


def open_session(client: Client, agent_id: str) -> str:
    response = client.send(
        "POST", "/v1/sessions", time.monotonic() + 60, json={"agent_id": agent_id}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


def session_partitions(bootstrap: str, topic: str) -> dict[str, int]:
    found = {}
    for record in read_all(bootstrap, topic):
        env = from_kafka(record.key, record.value, list(record.headers))
        if isinstance(env.data, events.SessionCreated):
            found[env.data.session_id] = record.partition
    return found


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate`` came true within ``timeout``: a kill aimed by it goes ahead
    either way. Looked at every 2 ms, as the calls it aims at last a few hundred."""
    try:
        eventually(predicate, "the moment to kill", timeout=timeout, poll=0.002)
    except NotYetError:
        return False
    return True


def read_by(prefix: str, role: str) -> str:
    """The topic a role's consumer group reads."""
    catalog = Catalog(prefix)
    topics = {"orchestrator": catalog.events, "model": catalog.model_calls}
    return {**topics, "tool": catalog.tool_calls}[role]


def wait_caught_up(bootstrap: str, prefix: str, roles: list[str], timeout: float = 60) -> None:
    """Wait until the roles' consumer groups have committed the end of the topic each
    reads (twice in a row, a second apart): their work is done and recorded."""

    async def lag() -> int:
        total = 0
        for role in roles:
            topic = read_by(prefix, role)
            tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
            async with group_consumer(bootstrap, prefix, role) as consumer:
                ends = await consumer.end_offsets(tps)
                for tp in tps:
                    total += ends[tp] - (await consumer.committed(tp) or 0)
        return total

    quiet = 0

    def caught_up() -> bool:
        nonlocal quiet
        lagging = asyncio.run(lag())
        quiet = quiet + 1 if lagging == 0 else 0
        assert quiet >= 2, f"lag {lagging}, {quiet} of 2 readings at 0"
        return True

    # Every second: two readings of no lag a second apart.
    eventually(caught_up, f"{roles} to catch up", timeout=timeout, poll=1)


def ledger_tokens(schema: str, usage: list[Any], timeout: float = 60) -> dict[str, dict[str, int]]:
    """Model tokens per tenant in the billing ledger (input with cached input), once the
    billing projector has applied the whole usage topic."""
    ends: dict[int, int] = {}
    for record in usage:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:

        def applied() -> bool:
            stored: dict[int, int] = dict(
                conn.execute(
                    f'SELECT partition, next_offset FROM "{schema}".projection_positions'
                    " WHERE topic LIKE '%%agentlog.usage'"
                ).fetchall()
            )
            assert all(stored.get(p, 0) >= end for p, end in ends.items()), (
                f"billing lags: {stored} of {ends}"
            )
            return True

        eventually(applied, "the usage topic billed", timeout=timeout)
        rows = conn.execute(
            "SELECT tenant_id,"
            " sum(coalesce((quantities->>'input_tokens')::bigint, 0)"
            " + coalesce((quantities->>'cached_input_tokens')::bigint, 0)),"
            " sum(coalesce((quantities->>'output_tokens')::bigint, 0))"
            f' FROM "{schema}".usage_ledger WHERE kind = %s GROUP BY tenant_id',
            ("model",),
        ).fetchall()
    return {str(t): {"input_tokens": int(i), "output_tokens": int(o)} for t, i, o in rows}


def live_tables(schema: str) -> list[str]:
    """The tables the rebuild compares, by the rebuild's own function."""

    async def run() -> list[str]:
        async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
            return sorted(await table_hashes(conn, schema))

    return asyncio.run(run())


def verified_line(schema: str) -> str:
    tables = live_tables(schema)
    # The fold's read models are all compared, the bookkeeping is not.
    assert {"applied_events", "turns", "messages", "tool_calls", "turn_steps"} <= set(tables)
    assert "alembic_version" not in tables
    return f"rebuild: {len(tables)} tables verified identical at the live position"


def says(stdout: str, line: str) -> bool:
    """Whether ``stdout`` has a line that begins with ``line`` (what follows is how long
    the step took)."""
    return any(said.startswith(line) for said in stdout.splitlines())


def rebuild(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            *("-m", "agentlog_cli", "projections", "rebuild", "core", "--no-swap", *extra),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def models() -> Iterator[PacedModelServer]:
    server = PacedModelServer().start()
    assert isinstance(server, PacedModelServer)
    yield server
    server.stop()


# -- the tests --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.broker_internal
@pytest.mark.timeout(480)
def test_kill_9_every_role_loses_and_repeats_nothing(
    tmp_path: Path, broker_factory: type[BrokerProcess], models: PacedModelServer
) -> None:
    """Drivers run turns on six sessions while each victim is killed two or three times
    (the effect workers and the broker while a call is in flight, the gateway while a
    turn request is), restarted, and probed; then the records are checked."""
    seed = random.getrandbits(32)
    rng = random.Random(seed)
    Client.resent = 0
    # Private, since it is killed too. A restarted broker has forgotten its groups'
    # members: with no initial rebalance delay the first member to rejoin takes every
    # partition while the others still work on theirs (two workers perform one call).
    # The delay lets every member notice the restart and finish its batch first.
    broker = broker_factory(
        tmp_path / "kafka", "--group-initial-rebalance-delay-ms", str(SESSION_TIMEOUT_MS)
    ).start()
    tools = PacedToolServer().start()
    tag = f"crash_{random.getrandbits(40):010x}"
    env = crash_env(broker.bootstrap, tag, models)
    victims: dict[str, Victim] = {"broker": BrokerRole(broker)}
    victims |= {name: Role(name, role_env(env, name, models.url), tmp_path) for name in ROLE_ARGS}
    abort, finish = threading.Event(), threading.Event()
    turns: list[Turn] = []
    errors: list[str] = []
    kills: list[Kill] = []
    recoveries: list[tuple[str, float]] = []
    started = time.monotonic()
    try:
        cli(env, "migrate")
        for name in ROLE_ARGS:
            victims[name].start()
        key = cli(env, "tenants", "create", "crash").strip()
        gateway = victims["gateway"]
        assert isinstance(gateway, Role)
        url = gateway.url
        client = Client(url, key, abort)
        wait_ready(client)
        agent_id = setup_agent(client, tools.url)
        # Per partition, drivers' sessions (so every model worker has calls to be killed
        # in) and a probe session (so the probes need every partition's owners).
        events_topic = f"{tag}.agentlog.events"
        by_partition: dict[int, list[str]] = defaultdict(list)
        while len(by_partition) < 3 or min(map(len, by_partition.values())) < DRIVERS + 1:
            created = [open_session(client, agent_id) for _ in range(6)]
            partitions = session_partitions(broker.bootstrap, events_topic)
            for session_id in created:
                by_partition[partitions[session_id]].append(session_id)
        probes = {partition: found[0] for partition, found in by_partition.items()}
        drivers = [s for found in by_partition.values() for s in found[1 : DRIVERS + 1]]

        def drive(index: int, session_id: str) -> None:
            own = Client(url, key, abort)
            n = 0
            try:
                while not finish.is_set():
                    message, expected = scripted_turn(f"s{index}-t{n}", tool=n % 2 == 0)
                    turns.append(
                        run_turn(own, session_id, f"s{index}-t{n}", message, expected, 120)
                    )
                    n += 1
                    # The point: a driver's pause (not rng's: rng is the kill schedule's).
                    time.sleep(random.uniform(0.1, 0.5))
            except Exception as exc:  # reported with the rest
                errors.append(f"driver {index}: {exc!r}")

        def probe(n: int) -> float:
            """Probe turns on every partition; the seconds until all have ended."""
            begun = time.monotonic()

            def one(partition: int) -> Turn:
                label = f"probe{n}-p{partition}"
                message, expected = scripted_turn(label, tool=True)
                own = Client(url, key, abort)
                return run_turn(own, probes[partition], label, message, expected, 2 * RECOVERY_S)

            with ThreadPoolExecutor(3) as pool:
                turns.extend(pool.map(one, sorted(probes)))
            return time.monotonic() - begun

        threads = [
            threading.Thread(target=drive, args=(i, s), daemon=True) for i, s in enumerate(drivers)
        ]
        for thread in threads:
            thread.start()
        time.sleep(3)  # the load settles in

        schedule = [name for name, count in KILLS.items() for _ in range(count)]
        rng.shuffle(schedule)
        for n, name in enumerate(schedule):
            time.sleep(rng.uniform(0.2, 1.5))  # the point: a random gap between kills
            # Effect workers and the broker are killed early in a call (if one comes
            # within 5 s), at a random point of it; calls last 0.45-1 s, tools 0.1-0.3 s.
            aimed = True
            if name.startswith("model"):
                aimed = wait_until(functools.partial(models.starting, name), 5)
                time.sleep(rng.uniform(0, 0.15))
            elif name == "tool":
                aimed = wait_until(tools.starting, 5)
                time.sleep(rng.uniform(0, 0.05))
            elif name == "broker":
                aimed = wait_until(models.starting, 5)
                time.sleep(rng.uniform(0, 0.15))
            elif name == "gateway":  # a turn request is over in milliseconds
                aimed = wait_until(lambda: Client.posting > 0, 5)
            kills.append(Kill(name, victims[name].kill()))
            time.sleep(rng.uniform(0, 0.5))  # the point: down for a random while
            victims[name].start()
            recoveries.append((name, probe(n)))
            print(f"kill {n}: {name} (aimed: {aimed}), recovered in {recoveries[-1][1]:.1f} s")
            assert not errors, errors
        finish.set()
        for thread in threads:
            thread.join(150)
        assert not errors, errors
        load_seconds = time.monotonic() - started

        wait_caught_up(broker.bootstrap, f"{tag}.", ["model", "tool", "orchestrator"])
        usage_records = read_all(broker.bootstrap, f"{tag}.agentlog.usage")
        verdict = check_exactly_once(
            read_all(broker.bootstrap, events_topic),
            usage_records,
            models.calls,
            tools.calls,
            kills,
            {turn.turn_id for turn in turns},
        )
        billed = ledger_tokens(f"{tag}_billing", usage_records)
        served = {
            "input_tokens": sum(u.input_tokens for u in models.served.values()),
            "output_tokens": sum(u.output_tokens for u in models.served.values()),
        }
        verdict.figures["tokens served, each call once"] = served
        verdict.figures["tokens in the billing ledger"] = billed
        if list(billed.values()) != [served]:
            verdict.report("billed tokens", f"ledger {billed}, model server {served}")
        worst = max(recoveries, key=lambda r: r[1])
        figures = {
            "seed": seed,
            "turns": len(turns),
            "turns resent": sum(t.sends > 1 for t in turns),
            "slowest turn s": round(max(t.seconds for t in turns), 1),
            "requests resent": Client.resent,
            "worst recovery": (worst[0], round(worst[1], 1)),
            "worst recovery by role": {
                name: round(max(s for n, s in recoveries if n == name), 1) for name in KILLS
            },
            "load s": round(load_seconds),
            **verdict.figures,
        }
        print("crash figures:", json.dumps(figures))
        assert verdict.problems == [], (verdict.problems[:20], figures)

        assert len(turns) >= MIN_TURNS, figures
        wrong = [t for t in turns if (t.status, t.answer) != ("completed", t.expected)]
        assert not wrong, wrong[:5]
        assert len({t.key for t in turns}) == len(turns)
        assert worst[1] <= RECOVERY_S, f"recovery after killing {worst[0]} took {worst[1]:.1f} s"
        assert {k.role for k in kills} == set(KILLS), figures
        hit = verdict.figures["kills that hit an in-flight call"]
        assert all(hit.get(name, 0) >= 1 for name in ("model-1", "model-2", "tool")), figures

        rebuilt = rebuild(env)
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        assert says(rebuilt.stdout, verified_line(tag)), rebuilt.stdout
        replayed = subprocess.run(
            [sys.executable, "-m", "agentlog_cli", "replay", "billing"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr[-3000:]
    finally:
        abort.set()
        for victim in reversed(victims.values()):  # the broker last
            victim.stop()
        tools.stop()
        drop_schemas(tag)


FAULT_ROLES = ("projector", "commands", "orchestrator-1", "model-1", "tool", "gateway")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", [None, "perform-twice"], ids=["no-fault", "perform-twice"])
def test_injected_double_perform_is_caught(
    bootstrap: str, tmp_path: Path, models: PacedModelServer, fault: str | None
) -> None:
    """Turns run; then the effect workers' committed offsets are reset to 0, so every
    request is delivered again (as after lost commits). The platform must perform none
    again, and the checker must find nothing; with the fault it performs them all
    again, and the checker must report repeats without a kill and tool results that
    differ (the tool counts its visits)."""
    tools = PacedToolServer(count_visits=True).start()
    tag = f"fault_{random.getrandbits(40):010x}"
    env = crash_env(bootstrap, tag, models)
    roles = {}
    for name in FAULT_ROLES:
        role_environ = role_env(env, name, models.url)
        if fault and name in ("model-1", "tool"):
            role_environ["AGENTLOG_TEST_FAULT"] = fault
        roles[name] = Role(name, role_environ, tmp_path)
    abort = threading.Event()
    try:
        cli(env, "migrate")
        for role in roles.values():
            role.start()
        key = cli(env, "tenants", "create", "fault").strip()
        client = Client(roles["gateway"].url, key, abort)
        wait_ready(client)
        agent_id = setup_agent(client, tools.url)
        sessions = [open_session(client, agent_id) for _ in range(2)]

        def drive(index: int) -> list[Turn]:
            done = []
            for n in range(2):
                label = f"f{index}-t{n}"
                message, expected = scripted_turn(label, tool=n == 0, visit=1)
                done.append(run_turn(client, sessions[index], label, message, expected, 60))
            return done

        with ThreadPoolExecutor(2) as pool:
            turns = [t for batch in pool.map(drive, range(2)) for t in batch]
        assert [(t.status, t.answer) for t in turns] == [("completed", t.expected) for t in turns]

        for name in ("model-1", "tool"):
            roles[name].stop()
        asyncio.run(_rewind(bootstrap, f"{tag}.", ["model", "tool"]))
        for name in ("model-1", "tool"):
            roles[name].start()
        wait_caught_up(bootstrap, f"{tag}.", ["model", "tool", "orchestrator"])

        verdict = check_exactly_once(
            read_all(bootstrap, f"{tag}.agentlog.events"),
            read_all(bootstrap, f"{tag}.agentlog.usage"),
            models.calls,
            tools.calls,
            [],
            {turn.turn_id for turn in turns},
        )
        print("fault figures:", fault, json.dumps(verdict.figures), verdict.problems[:6])
        if fault is None:
            assert verdict.problems == [], verdict.problems
            assert verdict.figures["repeats"] == {"model": 0, "tool": 0}
        else:
            # Every call was performed again, and each tool call recorded a second result.
            calls = verdict.figures["calls with duplicate result records"]
            assert verdict.kinds() == {
                "repeat without a kill (model)": 6,
                "repeat without a kill (tool)": 2,
                "different payloads (tool)": 2,
                "repeats": 1,  # 8 repeats, and no kill to explain them
            }, verdict.problems
            assert calls == {"model": 6, "tool": 2}, verdict.figures
    finally:
        abort.set()
        for role in roles.values():
            role.stop()
        tools.stop()
        drop_schemas(tag)


async def _rewind(bootstrap: str, prefix: str, roles: list[str]) -> None:
    """Commit offset 0 of the topic each of the (stopped) roles' groups reads."""
    for role in roles:
        topic = read_by(prefix, role)
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        async with group_consumer(bootstrap, prefix, role) as consumer:
            consumer.assign(tps)
            await consumer.commit({tp: 0 for tp in tps})
            assert [await consumer.committed(tp) for tp in tps] == [0] * len(tps)


@contextlib.asynccontextmanager
async def group_consumer(bootstrap: str, prefix: str, role: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer in a role's group, for reading or setting its committed offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"{prefix}agentlog.{role}", enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


def test_rebuild_names_a_tampered_table(platform: Platform) -> None:
    """The rebuild compares every table (their number derived from the rebuild's own
    table list) and, when one live row was changed behind the projector's back, fails
    naming that table."""
    with platform.client() as api:
        agent = api.post("/v1/agents", json={"name": "tamper", "model": "dev"})
        assert agent.status_code == 201, agent.text
        session = api.post("/v1/sessions", json={"agent_id": agent.json()["agent_id"]})
        assert session.status_code == 201, session.text
        turn = api.post(
            f"/v1/sessions/{session.json()['session_id']}/turns?wait=30", json={"message": "hi"}
        )
        assert turn.status_code == 200, turn.text
        assert turn.json()["answer"] == "echo: hi"

    untouched = rebuild(platform.env)
    assert untouched.returncode == 0, untouched.stderr[-3000:]
    assert says(untouched.stdout, verified_line(platform.schema)), untouched.stdout

    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        changed = conn.execute(
            f'UPDATE "{platform.schema}".messages SET content = %s WHERE message_id ='
            f' (SELECT answer_message_id FROM "{platform.schema}".turns WHERE turn_id = %s)',
            ("tampered", turn.json()["turn_id"]),
        )
        assert changed.rowcount == 1

    tampered = rebuild(platform.env)
    assert tampered.returncode != 0
    assert "RebuildMismatchError: tables differ: messages\n" in tampered.stderr, tampered.stderr
    assert "  only live: " in tampered.stderr
    assert "tampered" in tampered.stderr
    # A fold changed on purpose: the tables it writes are the rebuild's, the rest verified.
    accepted = rebuild(platform.env, "--changed", "messages")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "rebuild: tables taken from the rebuild as changed: ['messages']" in accepted.stdout
