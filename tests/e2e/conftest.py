"""The whole platform, for end-to-end tests: `agentlog up` against the suite's Kafka, with
its own topics (prefix), Postgres schema and port, driven over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from projections.secrets import new_key
from tests.eventually import NotYetError, eventually
from tests.kafka import REPO
from tests.processes import die_with_parent
from tests.services import database_url, redis_url
from workers.providers.protocol_server import ModelServer

DATABASE_URL = database_url()


@dataclass
class Platform:
    url: str
    key: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def prefix(self) -> str:
        return self.env["AGENTLOG_TOPIC_PREFIX"]

    @property
    def schema(self) -> str:
        return self.env["AGENTLOG_DATABASE_SCHEMA"]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """Write one raw record to one of the platform's topics (``agentlog.events``)."""

        async def send() -> None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.env["AGENTLOG_KAFKA_BOOTSTRAP_SERVERS"]
            )
            await producer.start()
            try:
                await producer.send_and_wait(
                    f"{self.prefix}{topic}", value, key=key, headers=headers
                )
            finally:
                await producer.stop()

        asyncio.run(send())


def platform_env(bootstrap: str, tag: str, model_server: ModelServer) -> dict[str, str]:
    """Settings of a platform with its own topics, schema and port, whose ``openai:`` and
    ``anthropic:`` models are served by ``model_server``."""
    return {
        **os.environ,  # the shell's AGENTLOG_* are gone (tests/conftest.py); a test's stay
        "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTLOG_TOPIC_PREFIX": f"{tag}.",
        "AGENTLOG_DATABASE_URL": DATABASE_URL,
        "AGENTLOG_REDIS_URL": redis_url(),
        "AGENTLOG_DATABASE_SCHEMA": tag,
        "AGENTLOG_GATEWAY_PORT": "0",
        "AGENTLOG_TOPIC_PARTITIONS": "3",
        "AGENTLOG_OPENAI_BASE_URL": f"{model_server.url}/v1",
        "AGENTLOG_OPENAI_API_KEY": "sk-e2e",
        "AGENTLOG_ANTHROPIC_BASE_URL": model_server.url,
        "AGENTLOG_ANTHROPIC_API_KEY": "ak-e2e",
        "AGENTLOG_MODEL_TIMEOUT_S": "2",
        "AGENTLOG_MODEL_MAX_RETRIES": "2",
        "AGENTLOG_MODEL_RETRY_BACKOFF_S": "0.05",
        "AGENTLOG_SECRETS_KEY": new_key(),
        # Four suite processes run platforms at once on a Postgres that may take 100
        # connections in all (as this machine's does), beside whatever else runs there
        # (agentlog up, another suite): a gateway's pools stay small.
        "AGENTLOG_DATABASE_POOL_SIZE": "3",
    }


def drop_schemas(schema: str) -> None:
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{schema}%",)
        ).fetchall()
        for (name,) in rows:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def applied_records(schema: str) -> int:
    """How many records a projection in ``schema`` has applied (or passed), summed over
    its partitions."""
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute(
            f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".projection_positions'
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    """A real HTTP server speaking the OpenAI and Anthropic protocols; scriptable."""
    server = ModelServer().start()
    yield server
    server.stop()


def launch_up(
    env: dict[str, str], log_path: Path, *args: str
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start ``agentlog up`` and wait until it says it is up; returns the process and
    what it printed, by name (``gateway``, ``api key``, ``postgres``, …)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlog_cli", "up", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_path.open("ab"),
        preexec_fn=die_with_parent,
    )
    printed: dict[str, str] = {}
    stdout = proc.stdout
    assert stdout is not None

    def read_line() -> bool:
        """Read what it printed next (waiting for a line: no poll needed)."""
        line = stdout.readline().decode()
        if not line and proc.poll() is not None:
            raise EOFError("agentlog up exited")
        name, _, rest = line.strip().partition("  ")
        if rest:
            printed[name.strip()] = rest.strip()
        return "api key" in printed

    try:
        eventually(read_line, "agentlog up to print its API key", timeout=90, poll=0)
    except (NotYetError, EOFError) as exc:
        proc.kill()
        raise RuntimeError(f"agentlog up did not start: {log_path.read_text()[-4000:]}") from exc
    return proc, printed


@pytest.fixture
def platform(bootstrap: str, tmp_path: Path, model_server: ModelServer) -> Iterator[Platform]:
    with running_platform(bootstrap, tmp_path, model_server) as platform:
        yield platform


@contextlib.contextmanager
def running_platform(
    bootstrap: str, tmp_path: Path, model_server: ModelServer, **extra_env: str
) -> Iterator[Platform]:
    """``agentlog up`` on its own topics and schema, with ``extra_env`` in its
    environment; stopped, and its schemas dropped, when the block ends."""
    tag = f"e2e_{uuid.uuid4().hex[:10]}"
    env = {**platform_env(bootstrap, tag, model_server), **extra_env}
    log_path = tmp_path / "platform.log"
    proc, printed = launch_up(env, log_path, "--no-broker")
    url, key = printed["gateway"].split()[0], printed["api key"]
    platform = Platform(url, key, env, proc, log_path)
    try:
        yield platform
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        drop_schemas(tag)


def start_gateway(platform: Platform, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Another gateway process on the platform's log and read models, with ``env``
    overriding its settings; returns it and its URL once it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlog_cli", "gateway"],
        cwd=REPO,
        env={**platform.env, "AGENTLOG_GATEWAY_PORT": "0", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    assert proc.stdout is not None
    printed = proc.stdout.readline().decode().split()  # "gateway http://host:port"
    if printed[:1] != ["gateway"]:
        proc.kill()
        raise AssertionError(f"the gateway did not start: {printed}")
    url = printed[1]

    def healthy() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        return False

    try:
        eventually(healthy, f"the gateway at {url} to answer /healthz", timeout=30)
    except NotYetError:
        proc.kill()
        raise
    return proc, url


def stop_gateway(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class ToolServer:
    """A real HTTP tool endpoint: /weather answers, /slow stalls, /broken fails, /echo
    and /echo-error answer (200 and 500) with the request's headers."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            received.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            if self.path == "/slow":
                time.sleep(3)  # the point: a tool that stalls
            if self.path == "/broken":
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"boom")
                return
            if self.path in ("/echo", "/echo-error"):  # a careless tool: quotes its headers
                self.send_response(500 if self.path == "/echo-error" else 200)
                self.end_headers()
                self.wfile.write(json.dumps(dict(self.headers)).encode())
                return
            answer = json.dumps({"city": body.get("city"), "forecast": "sunny", "celsius": 21})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ToolServer(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
