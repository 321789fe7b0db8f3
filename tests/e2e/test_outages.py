"""Outages answer fast and truthfully: with Postgres unreachable a request gets its 503
within seconds, a command already recorded answers 202 (and its turn runs), /readyz goes
503 and back, and an unreachable Redis fails open; with the broker killed under load
every write answers within its bound, and writes succeed again once it is back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from streams.logs import REPEAT_INTERVAL_S
from tests.e2e.conftest import (
    DATABASE_URL,
    Platform,
    ToolServer,
    running_platform,
    start_gateway,
    stop_gateway,
)
from tests.e2e.test_bad_input import problem
from tests.e2e.test_billing import cli
from tests.e2e.test_turns import open_session, setup_agent
from tests.eventually import NotYetError, eventually
from tests.kafka import BrokerProcess, closed_port
from workers.providers.protocol_server import ModelServer

OUTAGE_ANSWER_S = 3.0


class TcpProxy:
    """Forwards a local port to Postgres; ``stop()`` drops every connection and refuses
    new ones (it accepts and cuts them at once), as a network outage would, and
    ``start()`` brings it back. It listens on one port throughout, chosen by the system
    when it first starts, so no other process can take it meanwhile."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.down = False
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    def start(self) -> None:
        async def listen() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
            self.down = False

        asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)

    def stop(self) -> None:
        async def drop() -> None:
            self.down = True
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(drop(), self.loop).result(10)

    def close(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def url(self, database_url: str) -> str:
        parts = urlsplit(database_url)
        netloc = (
            f"{parts.username}@127.0.0.1:{self.port}"
            if parts.username
            else f"127.0.0.1:{self.port}"
        )
        return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    parts = urlsplit(DATABASE_URL)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    yield proxy
    proxy.stop()
    proxy.close()
    proxy.loop.call_soon_threadsafe(proxy.loop.stop)


def timed(request: httpx.Request) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        response = client.send(request)
    return response, time.monotonic() - started


def test_postgres_unreachable_answers_503_fast_and_202_once_recorded(
    platform: Platform, tool_server: ToolServer, proxy: TcpProxy
) -> None:
    """The second gateway reaches Postgres through the proxy; the workers do not."""
    proc, url = start_gateway(platform, AGENTLOG_DATABASE_URL=proxy.url(DATABASE_URL))
    try:
        auth = {"Authorization": f"Bearer {platform.key}"}
        with platform.client() as api:
            agent = setup_agent(api, tool_server)
            session_id = open_session(api, agent["agent_id"])
        # Warm the second gateway's caches: its key and the session.
        assert httpx.get(f"{url}/v1/sessions/{session_id}", headers=auth).status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200

        proxy.stop()

        for request in (
            httpx.Request("GET", f"{url}/v1/agents", headers=auth),
            httpx.Request("GET", f"{url}/v1/agents", headers={"Authorization": "Bearer al_x"}),
        ):
            response, took = timed(request)
            problem(response, 503, "UNAVAILABLE")
            assert response.headers["retry-after"] == "1"
            assert took < OUTAGE_ANSWER_S, f"{request.url}: 503 after {took:.1f} s"
        ready, took = timed(httpx.Request("GET", f"{url}/readyz"))
        problem(ready, 503, "NOT_READY")
        assert took < OUTAGE_ANSWER_S

        turn = httpx.Request(
            "POST",
            f"{url}/v1/sessions/{session_id}/turns?wait=5",
            headers=auth,
            json={"message": "hello"},
        )
        response, took = timed(turn)
        assert response.status_code == 202, response.text
        recorded = response.json()
        assert recorded["status"] == "requested"
        assert response.headers["location"] == f"/v1/turns/{recorded['turn_id']}"
        assert took < 5 + OUTAGE_ANSWER_S

        proxy.start()

        def back() -> int:
            status = httpx.get(f"{url}/readyz").status_code
            assert status == 200, status
            return status

        eventually(back, "/readyz to come back", timeout=30)
        # The turn that was recorded during the outage ran.
        with platform.client() as api:

            def ended() -> httpx.Response:
                found = api.get(f"/v1/turns/{recorded['turn_id']}")
                assert found.json()["status"] in ("completed", "failed"), found.text
                return found

            done = eventually(ended, "the turn recorded in the outage to end", timeout=30)
            assert done.json()["answer"] == "echo: hello"
    finally:
        stop_gateway(proc)


def test_redis_unreachable_fails_open(platform: Platform, tool_server: ToolServer) -> None:
    """Idempotency keys live in Redis; without it a keyed request still succeeds (its
    ids are derived from the key, so a retry still creates nothing new)."""
    with closed_port() as port:
        proc, url = start_gateway(platform, AGENTLOG_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        try:
            auth = {"Authorization": f"Bearer {platform.key}", "Idempotency-Key": "k-1"}
            body = {"name": "kept", "model": "dev"}
            first = httpx.post(f"{url}/v1/agents", headers=auth, json=body, timeout=30)
            again = httpx.post(f"{url}/v1/agents", headers=auth, json=body, timeout=30)
            assert first.status_code == 201, first.text
            assert again.status_code in (201, 409), again.text
            with platform.client() as api:
                names = [a["name"] for a in api.get("/v1/agents").json()["items"]]
            assert names.count("kept") == 1
        finally:
            stop_gateway(proc)


WRITE_TIMEOUT_S = 2.0
OUTCOME_WAIT_S = 10.0  # what agents, sessions and invoke wait for a command's outcome
# Beyond a write's documented bound: a loaded 2-core machine, and the reads around it.
SLACK_S = 3.0
DOWN_S = 15.0  # long enough for a write that waited out an outcome to start again


@dataclass(frozen=True)
class Write:
    """One write route, sent again and again by one client."""

    name: str
    path: str
    body: dict[str, Any]
    bound_s: float  # documented: the write timeout per record, plus any outcome wait
    served: frozenset[int]  # what it answers with the broker up
    keyed: bool = False  # a fresh Idempotency-Key per request
    operator: bool = False


@dataclass(frozen=True)
class Answer:
    write: Write
    headers: dict[str, str]
    started: float
    took: float
    status: int | None  # None: no answer within the client's patience
    body: dict[str, Any]
    retry_after: str | None


def _writes(agent_id: str, sessions: list[str]) -> list[Write]:
    w, outcome = WRITE_TIMEOUT_S, WRITE_TIMEOUT_S + OUTCOME_WAIT_S
    turn = {"message": "hi"}
    return [
        Write("turn", f"/v1/sessions/{sessions[0]}/turns", turn, w, frozenset({202})),
        Write("keyed turn", f"/v1/sessions/{sessions[1]}/turns", turn, w, frozenset({202}), True),
        Write(
            "agent", "/v1/agents", {"name": "a", "model": "dev"}, outcome, frozenset({201}), True
        ),
        Write("session", "/v1/sessions", {"agent_id": agent_id}, outcome, frozenset({201})),
        # Two records: the session's command, waited for, then the turn's.
        Write(
            "invoke",
            f"/v1/agents/{agent_id}/invoke?wait=0",
            turn,
            w + outcome,
            frozenset({202}),
            True,
        ),
        # Reads the dead letter from its topic before it records anything: none there.
        Write(
            "re-drive",
            "/dashboard/dead-letters/0/999999/redrive",
            {},
            w,
            frozenset({404}),
            operator=True,
        ),
    ]


def _hammer(
    platform: Platform, operator: str, write: Write, answers: list[Answer], done: threading.Event
) -> None:
    key = operator if write.operator else platform.key
    with httpx.Client(base_url=platform.url, timeout=write.bound_s + SLACK_S + 10) as client:
        while not done.is_set():
            headers = {"Authorization": f"Bearer {key}"}
            if write.keyed:
                headers["Idempotency-Key"] = str(uuid.uuid4())
            started = time.monotonic()
            try:
                response = client.post(write.path, json=write.body, headers=headers)
            except httpx.TimeoutException:
                took = time.monotonic() - started
                answers.append(Answer(write, headers, started, took, None, {}, None))
                continue
            took = time.monotonic() - started
            body = response.json() if response.content else {}
            retry_after = response.headers.get("retry-after")
            status = response.status_code
            answers.append(Answer(write, headers, started, took, status, body, retry_after))
            time.sleep(0.05)  # the point: a client's pace, some 20 writes a second at most


@pytest.mark.broker_internal
@pytest.mark.timeout(300)
def test_writes_answer_in_time_while_the_broker_is_down_and_succeed_once_it_is_back(
    broker_factory: type[BrokerProcess], tmp_path: Path, model_server: ModelServer
) -> None:
    """Six clients write through six routes while the broker is killed (-9) for 15 s:
    each answer comes within the route's bound, as 503 UNAVAILABLE with Retry-After or
    202 (recorded); once the broker is back every route serves again. Agents asked for
    during the outage exist once each after their clients retried the 503s with the
    same Idempotency-Key, whether or not the gateway wrote the first one late."""
    broker = broker_factory(tmp_path / "kafka").start()
    env = {"AGENTLOG_WRITE_TIMEOUT_S": str(WRITE_TIMEOUT_S)}
    with running_platform(broker.bootstrap, tmp_path, model_server, **env) as platform:
        with platform.client() as api:
            agent = api.post("/v1/agents", json={"name": "echo", "model": "dev"})
            assert agent.status_code == 201, agent.text
            agent_id = agent.json()["agent_id"]
            sessions = [open_session(api, agent_id) for _ in range(2)]
        operator = cli(platform, "operators", "create", "on-call").stdout.strip().splitlines()[-1]
        writes = _writes(agent_id, sessions)
        answers: list[Answer] = []
        done = threading.Event()
        writers = [
            threading.Thread(
                target=_hammer, args=(platform, operator, w, answers, done), daemon=True
            )
            for w in writes
        ]
        for writer in writers:
            writer.start()
        killed = back = 0.0
        try:
            _until(lambda: all(_served(answers, w, 0.0) for w in writes), 60, answers)
            broker.kill()
            killed = time.monotonic()
            time.sleep(DOWN_S)  # the point: the outage
            broker.start()
            back = time.monotonic()
            _until(lambda: all(_served(answers, w, back) for w in writes), 90, answers)
        finally:
            done.set()
            for writer in writers:
                writer.join(60)
        report = _report(answers, killed, back)
        for answer in answers:
            name, took = answer.write.name, answer.took
            assert answer.status is not None, f"{name}: no answer in {took:.1f} s\n{report}"
            assert took <= answer.write.bound_s + SLACK_S, f"{name}: {took:.1f} s\n{report}"
            assert answer.status in answer.write.served | {202, 503}, f"{name}\n{report}"
            if answer.status == 503:
                assert answer.body["code"] == "UNAVAILABLE", answer.body
                assert answer.retry_after is not None
        for write in writes:
            during = [a for a in answers if a.write is write and killed <= a.started < back]
            assert any(a.status == 503 for a in during), f"{write.name}: no 503\n{report}"

        with platform.client() as api:
            agents = [a for a in answers if a.write.name == "agent"]
            for answer in agents:
                if answer.status == 503:  # what a careful client does
                    again = api.post("/v1/agents", json=answer.write.body, headers=answer.headers)
                    assert again.status_code == 201, again.text
            listed = api.get("/v1/agents", params={"limit": 200}).json()["items"]
        assert sum(a["name"] == "a" for a in listed) == len(agents), report


def _served(answers: list[Answer], write: Write, since: float) -> bool:
    return any(
        a.write is write and a.started >= since and a.status in write.served for a in answers
    )


def _until(condition: Callable[[], bool], timeout: float, answers: list[Answer]) -> None:
    try:
        eventually(condition, "every route served", timeout=timeout)
    except NotYetError as exc:
        exc.add_note(_report(answers, 0, 0))  # made once, as it reads every answer
        raise


def _report(answers: list[Answer], killed: float, back: float) -> str:
    """What each client got, in order, for a failure's message."""
    lines = []
    for a in answers:
        phase = "down" if killed <= a.started < back else "up"
        what = f"{a.status} {a.body.get('code', '')} {a.body.get('detail', '')}"
        lines.append(f"{phase} {a.write.name}: {what} in {a.took:.2f} s")
    return "\n".join(lines[-200:])


@pytest.mark.broker_internal
def test_logs_stay_quiet_while_the_broker_is_down(
    broker_factory: type[BrokerProcess], tmp_path: Path, model_server: ModelServer
) -> None:
    """Every role of ``agentlog up`` and its gateway (a client writing throughout) log
    through the rate limit: with the broker down for 12 s, a message shows at most once
    per ``REPEAT_INTERVAL_S`` (10 s), the second time with how many were dropped.
    Without it, 8 s wrote 4,766 lines (783 KB)."""
    broker = broker_factory(tmp_path / "kafka").start()
    down_s = REPEAT_INTERVAL_S + 2
    env = {"AGENTLOG_WRITE_TIMEOUT_S": "1"}
    with (
        running_platform(broker.bootstrap, tmp_path, model_server, **env) as platform,
        platform.client() as api,
    ):
        agent = api.post("/v1/agents", json={"name": "echo", "model": "dev"})
        session_id = open_session(api, agent.json()["agent_id"])
        before = len(platform.log_path.read_bytes().splitlines())
        broker.kill()
        deadline = time.monotonic() + down_s  # the point: a client writes throughout
        while time.monotonic() < deadline:
            api.post(f"/v1/sessions/{session_id}/turns", json={"message": "hi"})
        lines = platform.log_path.read_bytes().splitlines()[before:]
        broker.start()
    logged = [json.loads(line) for line in lines]
    shown = collections.Counter((m["logger"], m["level"], m["message"]) for m in logged)
    assert max(shown.values()) <= 2, shown.most_common(3)
    assert len(logged) < 100, shown.most_common(3)
    assert any(m.get("suppressed", 0) > 100 for m in logged), shown.most_common(3)
