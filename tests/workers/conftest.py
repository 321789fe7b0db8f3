"""What the effect workers' tests share: a secret store of the test's own (a fresh
schema of the machine's Postgres), and a real HTTP tool server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg import sql

from projections.secrets import SecretStore, new_key
from tests.e2e.conftest import DATABASE_URL


@pytest.fixture
async def secrets() -> AsyncIterator[SecretStore]:
    schema = f"work_{uuid.uuid4().hex[:12]}"
    store = SecretStore(DATABASE_URL, schema, new_key())
    await store.ensure()
    yield store
    await store.close()
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        name = sql.Identifier(f"{schema}_secrets")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


@dataclass
class ToolServer:
    """A real HTTP tool: ``/weather`` answers JSON, ``/status/<n>`` answers status n,
    ``/big`` a body of ``big_bytes``, ``/slow`` after ``slow_s``, and ``/echo`` its
    request's headers (a careless tool that quotes a secret)."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    big_bytes: int = 100_000
    slow_s: float = 2.0


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    tools = ToolServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            tools.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            status, answer = 200, json.dumps({"city": body.get("city"), "forecast": "sunny"})
            if self.path.startswith("/status/"):
                status, answer = int(self.path.rsplit("/", 1)[1]), f"failed {self.path}"
            elif self.path == "/big":
                answer = "x" * tools.big_bytes
            elif self.path == "/echo":
                answer = json.dumps(dict(self.headers))
            elif self.path == "/slow":
                time.sleep(tools.slow_s)  # the point: a tool that stalls
            self.send_response(status)
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tools.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield tools
    finally:
        server.shutdown()
        server.server_close()
