"""Outages answer fast and truthfully: with Postgres unreachable a request gets its 503
within seconds, a command already recorded answers 202 (and its turn runs), /readyz goes
503 and back, and an unreachable Redis fails open."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.e2e.conftest import DATABASE_URL, Platform, ToolServer, start_gateway, stop_gateway
from tests.e2e.test_bad_input import problem
from tests.e2e.test_turns import open_session, setup_agent
from tests.kafka import closed_port

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
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "/readyz did not come back"
            time.sleep(0.2)
        # The turn that was recorded during the outage ran.
        with platform.client() as api:
            done = api.get(f"/v1/turns/{recorded['turn_id']}")
            while done.json()["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline, done.text
                time.sleep(0.1)
                done = api.get(f"/v1/turns/{recorded['turn_id']}")
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
