"""Where the Kafka contract suite finds a broker, and how it runs one of its own.

By default every test session starts the embedded broker as a separate process and
talks to it over TCP. ``KAFKA_BOOTSTRAP_SERVERS`` points the suite at any running Kafka
instead (tests marked ``broker_internal`` are skipped then), and
``AGENTLOG_TEST_KAFKA=testcontainers`` starts Apache Kafka through testcontainers where
a Docker engine exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.eventually import NotYetError, eventually
from tests.processes import die_with_parent

REPO = Path(__file__).resolve().parent.parent


def external_bootstrap() -> str | None:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing answers on: bound but not listening (a connection is refused), so
    no other process can take it while the caller uses it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class BrokerProcess:
    """The embedded broker in its own process, so tests can kill -9 and restart it. It
    binds any free port the first time (no other process can take it between a check and
    the bind) and the same port again when restarted, so its clients find it."""

    def __init__(self, data_dir: Path, *extra_args: str) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.metrics_port: int | None = None
        self.extra_args = extra_args
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        assert self.port, "the broker has not started"
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> BrokerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        start_offset = log.tell()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.broker",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ],
            cwd=REPO,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent,
        )
        log.close()
        proc = self.proc

        def started() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"broker exited with {proc.returncode}: {self.logs()}")
            for line in self.log_path.read_bytes()[start_offset:].splitlines():
                if b'"metrics served"' in line:
                    self.metrics_port = int(json.loads(line)["port"])
                if b'"broker started"' in line:
                    port = int(json.loads(line)["port"])
                    if self.port not in (0, port):  # raised: an assertion would read as not yet
                        raise RuntimeError(f"broker started on {port}, not {self.port}")
                    self.port = port
                    return True
            return False

        try:
            eventually(started, "the broker to start", timeout=timeout)
        except NotYetError as exc:
            raise RuntimeError(f"broker did not start: {self.logs()}") from exc
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
