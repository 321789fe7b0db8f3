"""An embedded server: a real server program run as a child of this process with its
data in its home directory, or found running there by another agentlog process."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import pwd
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from .child_processes import alive, dies_with_parent

log = logging.getLogger("agentlog.embedded")


class ServiceUnavailable(RuntimeError):
    """A service setting that cannot be served: nothing answers at an explicit URL, or no
    embedded server runs where a process that may not start one looks."""


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
