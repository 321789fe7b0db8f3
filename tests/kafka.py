"""Where the Kafka contract suite finds a broker, and how it runs one of its own.

By default every test session starts the embedded broker as a separate process and
talks to it over TCP. ``KAFKA_BOOTSTRAP_SERVERS`` points the suite at any running Kafka
instead (tests marked ``broker_internal`` are skipped then), and
``AGENTLOG_TEST_KAFKA=testcontainers`` starts Apache Kafka through testcontainers where
a Docker engine exists.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import die_with_parent

REPO = Path(__file__).resolve().parent.parent


def external_bootstrap() -> str | None:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerProcess:
    """The embedded broker in its own process, so tests can kill -9 and restart it."""

    def __init__(self, data_dir: Path, *extra_args: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}: {self.logs()}")
            for line in self.log_path.read_bytes()[start_offset:].splitlines():
                if b'"broker started"' in line:
                    assert json.loads(line)["port"] == self.port
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"broker did not start: {self.logs()}")

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
