"""Input is bounded before it is read: every class of hostile-but-legitimate request
gets its registered problem code, and the gateway's memory stays flat."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Platform, ToolServer
from tests.e2e.test_bad_input import problem
from tests.e2e.test_turns import open_session, setup_agent
from tests.eventually import eventually

MB = 1024 * 1024


@pytest.fixture
def tight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits small enough to reach quickly in a test."""
    monkeypatch.setenv("AGENTLOG_HEADER_TIMEOUT_S", "1")
    monkeypatch.setenv("AGENTLOG_BODY_TIMEOUT_S", "1")
    monkeypatch.setenv("AGENTLOG_SSE_STREAMS_PER_TENANT", "2")


def connect(platform: Platform) -> socket.socket:
    host, port = platform.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def status_of(sock: socket.socket, data: bytes = b"") -> tuple[int, bytes]:
    """The status code and what was read of the response (until the connection closes or
    the body of a problem is complete), after ``data`` already read."""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


def send_chunked(sock: socket.socket, path: str, headers: str, total: int) -> tuple[int, bytes]:
    """POST ``total`` bytes as a chunked body, stopping once the server answers or closes."""
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n{headers}\r\n".encode()
    )
    chunk = b"%x\r\n%s\r\n" % (MB, b" " * MB)
    sock.settimeout(0.5)
    sent = 0
    while sent < total:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            break  # the server stopped reading: it has answered
        sent += MB
    sock.settimeout(10)
    return status_of(sock)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def rss_peak(platform: Platform) -> Iterator[dict[str, int]]:
    """Samples the platform process's RSS every 10 ms while the test runs."""
    found = {"before": rss_bytes(platform.proc.pid), "peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            found["peak"] = max(found["peak"], rss_bytes(platform.proc.pid))
            time.sleep(0.01)  # the point: a sample every 10 ms

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    yield found
    done.set()
    thread.join()


def test_unauthenticated_bodies_are_refused_before_they_are_read(
    platform: Platform, rss_peak: dict[str, int]
) -> None:
    with platform.client() as api:  # warm every path once
        assert api.get("/v1/agents").status_code == 200
    rss_peak["before"] = rss_bytes(platform.proc.pid)
    answers: list[tuple[int, bytes]] = []

    def hostile() -> None:
        with connect(platform) as sock:
            answers.append(send_chunked(sock, "/v1/agents", "", 100 * MB))

    senders = [threading.Thread(target=hostile) for _ in range(10)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(120)
    assert [status for status, _ in answers] == [401] * 10
    assert all(b'"code":"UNAUTHENTICATED"' in body for _, body in answers)
    grew = rss_peak["peak"] - rss_peak["before"]
    assert grew < 50 * MB, f"the gateway grew by {grew / MB:.0f} MB"


def test_each_class_of_malformed_request_gets_its_code(
    platform: Platform, tool_server: ToolServer
) -> None:
    auth = f"Authorization: Bearer {platform.key}\r\n"
    with connect(platform) as sock:
        assert send_chunked(sock, "/v1/agents", auth, 100 * MB)[0] == 413
    with connect(platform) as sock:
        sock.sendall(
            b"POST /v1/agents HTTP/1.1\r\nHost: t\r\nContent-Length: 104857600\r\n"
            + auth.encode()
            + b"\r\n"
        )
        status, body = status_of(sock)
        assert (status, b'"code":"BODY_TOO_LARGE"' in body) == (413, True)

    with platform.client() as api:
        # The scheme is case-insensitive; an empty key is no key.
        lower = {"Authorization": f"bearer {platform.key}"}
        assert httpx.get(f"{platform.url}/v1/agents", headers=lower).status_code == 200
        empty = httpx.get(f"{platform.url}/v1/agents", headers={"Authorization": "Bearer"})
        problem(empty, 401, "UNAUTHENTICATED")

        raw = {"Content-Type": "application/json"}
        problem(
            api.post("/v1/agents", content=b'{"name": "\xff\xfe"}', headers=raw),
            400,
            "MALFORMED_BODY",
        )
        deep = "[" * 1000 + "]" * 1000
        problem(
            api.post("/v1/agents", content=f'{{"name": {deep}}}', headers=raw), 422, "JSON_TOO_DEEP"
        )
        nested: dict[str, Any] = {"type": "object"}
        for _ in range(40):
            nested = {"type": "object", "properties": {"a": nested}}
        deep_tool = {"name": "deep", "url": tool_server.url, "parameters": nested}
        problem(api.post("/v1/tools", json=deep_tool), 422, "JSON_TOO_DEEP")

        # Stored fields are capped, and integers are integers.
        big_prompt = {"name": "a", "model": "dev", "system_prompt": "x" * (MB // 2)}
        problem(api.post("/v1/agents", json=big_prompt), 422, "VALIDATION_FAILED")
        for odd in ({"max_tool_calls": False}, {"max_steps": True}, {"max_steps": 2.5}):
            problem(api.post("/v1/agents", json={"name": "a", **odd}), 422, "VALIDATION_FAILED")
        agent = setup_agent(api, tool_server)
        wide = {"agent_id": agent["agent_id"], "metadata": {f"k{i}": "v" for i in range(500)}}
        problem(api.post("/v1/sessions", json=wide), 422, "VALIDATION_FAILED")
        long_value = {"agent_id": agent["agent_id"], "metadata": {"k": "v" * 100_000}}
        problem(api.post("/v1/sessions", json=long_value), 422, "VALIDATION_FAILED")
        problem(
            api.post("/v1/agents", json={"name": "a"}, headers={"Idempotency-Key": ""}),
            422,
            "VALIDATION_FAILED",
        )

        # Cursors that decode, but to the wrong shape.
        session_id = open_session(api, agent["agent_id"])
        for token in ("5", '{"a": 1}', '["x", 5]', '["not a time", "id"]', "[[[[]]]]"):
            cursor = base64.urlsafe_b64encode(token.encode()).decode()
            problem(api.get("/v1/agents", params={"cursor": cursor}), 400, "INVALID_CURSOR")
            problem(api.get("/v1/sessions", params={"cursor": cursor}), 400, "INVALID_CURSOR")
            if token != "5":  # a position: what a messages cursor is
                page = api.get(f"/v1/sessions/{session_id}/messages", params={"cursor": cursor})
                problem(page, 400, "INVALID_CURSOR")

        not_allowed = api.delete("/v1/agents")
        problem(not_allowed, 405, "METHOD_NOT_ALLOWED")
        assert set(not_allowed.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def stream_status(platform: Platform, session_id: str, **headers: str) -> httpx.Response:
    with httpx.stream(
        "GET",
        f"{platform.url}/v1/sessions/{session_id}/stream",
        headers={"Authorization": f"Bearer {platform.key}", **headers},
        timeout=10,
    ) as response:
        if response.status_code >= 400:
            response.read()
        return response


def test_stream_positions_are_checked_against_the_log_and_streams_are_bounded(
    tight: None, platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        session_id = open_session(api, setup_agent(api, tool_server)["agent_id"])
        turn = api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": "hi"})
        assert turn.status_code == 200, turn.text

    # The session's own events: the first of them resumes fine.
    events_seen: list[str] = []
    with httpx.stream(
        "GET",
        f"{platform.url}/v1/sessions/{session_id}/stream?start=beginning",
        headers={"Authorization": f"Bearer {platform.key}"},
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                events_seen.append(line[4:])
                break
    (first,) = events_seen
    partition, offset = (int(part) for part in first.split(":"))
    assert stream_status(platform, session_id, **{"Last-Event-ID": first}).status_code == 200

    other = (partition + 1) % 3
    for bad in (f"{partition}:-1", f"{partition}:999999999", f"{other}:{offset}", "x", "1:"):
        response = stream_status(platform, session_id, **{"Last-Event-ID": bad})
        problem(response, 400, "INVALID_CURSOR")

    # Two streams per tenant here; the third is refused until one closes.
    opened: list[Any] = []
    try:
        for _ in range(2):
            stream = httpx.stream(
                "GET",
                f"{platform.url}/v1/sessions/{session_id}/stream",
                headers={"Authorization": f"Bearer {platform.key}"},
                timeout=10,
            )
            assert stream.__enter__().status_code == 200
            opened.append(stream)
        refused = stream_status(platform, session_id)
        problem(refused, 429, "TOO_MANY_STREAMS")
        assert refused.headers["retry-after"] == "1"
    finally:
        for stream in opened:
            stream.__exit__(None, None, None)
    eventually(
        lambda: stream_status(platform, session_id).status_code != 429,
        "the closed streams to be released",
        timeout=10,
    )


def test_slow_clients_are_timed_out(tight: None, platform: Platform) -> None:
    # Headers that never end: the connection is closed.
    with connect(platform) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        sock.settimeout(10)
        assert sock.recv(1024) == b""
    # A body that trickles in: 408.
    with connect(platform) as sock:
        sock.sendall(
            b"POST /v1/agents HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nAuthorization: Bearer " + platform.key.encode() + b"\r\n\r\n{"
        )
        sock.settimeout(0.3)
        data = b""
        for _ in range(40):
            try:
                data = sock.recv(65536)
                break
            except TimeoutError:
                sock.sendall(b" ")
        sock.settimeout(10)
        status, data = status_of(sock, data)
        assert status == 408, data[:100]
        assert b'"code":"BODY_TIMEOUT"' in data


@pytest.fixture
def generous_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits that let a message through that the topic cannot take."""
    monkeypatch.setenv("AGENTLOG_MAX_MESSAGE_BYTES", str(3 * MB))
    monkeypatch.setenv("AGENTLOG_MAX_BODY_BYTES", str(4 * MB))


def test_a_command_too_large_for_its_topic_is_a_413_not_an_outage(
    generous_messages: None, platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        session_id = open_session(api, setup_agent(api, tool_server)["agent_id"])
        response = api.post(f"/v1/sessions/{session_id}/turns", json={"message": "x" * 2 * MB})
        problem(response, 413, "RECORD_TOO_LARGE")
        assert "retry-after" not in response.headers
