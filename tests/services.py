"""Where the suite finds Postgres and Redis.

``AGENTLOG_TEST_DATABASE_URL`` and ``AGENTLOG_TEST_REDIS_URL`` name them: a URL, or
``embedded`` for servers the session starts itself (CI runs the end-to-end suite a second
time so, with this machine's servers ignored). Unset, they are ``auto``: this machine's
servers at the usual addresses when they answer, otherwise embedded ones. Embedded servers
keep their data in a temporary directory of the session and stop with it.

The session writes the URLs it resolved back into those variables, so every module reads
them from one place: ``database_url()`` and ``redis_url()``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from projections.secrets import new_key
from streams.embedded import LocalServices, resolve
from streams.settings import Settings

DATABASE_VARIABLE = "AGENTLOG_TEST_DATABASE_URL"
REDIS_VARIABLE = "AGENTLOG_TEST_REDIS_URL"
MACHINE_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"


def database_url() -> str:
    return os.environ.get(DATABASE_VARIABLE, MACHINE_DATABASE_URL)


def redis_url() -> str:
    return os.environ.get(REDIS_VARIABLE, MACHINE_REDIS_URL)


def settings(**overrides: Any) -> Settings:
    """Settings on the session's Postgres and Redis, with a secrets key of their own (or
    the key would be read from, or written to, ``.agentlog/`` in the working tree)."""
    return Settings(
        **{
            "database_url": database_url(),
            "redis_url": redis_url(),
            "secrets_key": new_key(),
            **overrides,
        }
    )


class SessionServices:
    """The servers one test session uses, resolved once."""

    def __init__(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="agentlog-services-"))
        self.local: LocalServices | None = None

    def start(self) -> SessionServices:
        """Resolve both (call from the main thread: embedded servers die with the thread
        that started them) and export their URLs."""
        settings = Settings(
            database_url=os.environ.get(DATABASE_VARIABLE, "auto"),
            local_database_url=MACHINE_DATABASE_URL,
            redis_url=os.environ.get(REDIS_VARIABLE, "auto"),
            local_redis_url=MACHINE_REDIS_URL,
            data_dir=str(self.data),
        )
        self.local = resolve(settings, start=True)
        os.environ[DATABASE_VARIABLE] = self.local.settings.database_url
        os.environ[REDIS_VARIABLE] = self.local.settings.redis_url
        return self

    @property
    def lines(self) -> list[str]:
        return self.local.lines if self.local is not None else []

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()
        shutil.rmtree(self.data, ignore_errors=True)
