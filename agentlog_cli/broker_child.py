"""The embedded broker as a child process of ``agentlog up`` (and ``agentlog services
up``), started again when it dies.

A broker that dies is started again after a backoff, each restart logged; one that has
run for ``STABLE_S`` counts as recovered. One that dies again and again (it cannot bind
its port, its data cannot be read) is not hidden: after ``len(RESTART_BACKOFF_S)``
restarts in a row the parent stops everything and exits with status 1. The roles and the
gateway reconnect by themselves; meanwhile writes answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.child_processes import dies_with_parent
from streams.settings import Settings

log = logging.getLogger("agentlog.broker")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # before the first restart in a row, …
STABLE_S = 60.0
_POLL_S = 0.2  # how often the child is checked: a waitpid, nothing more


class BrokerChild:
    """The broker process, started at once; ``watch`` keeps it running."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        host, port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
        self._command = [
            sys.executable,
            "-m",
            "streams.broker",
            "--host",
            host,
            "--port",
            port,
            "--data-dir",
            str(data_dir),
            "--default-partitions",
            str(settings.topic_partitions),
        ]
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Started from the thread that runs the event loop (the main one): the child
        dies with that thread."""
        return subprocess.Popen(
            self._command,
            # Stopped by this process once the roles have committed, not by a Ctrl-C at
            # the terminal; and with it, should it die.
            process_group=0,
            preexec_fn=dies_with_parent(signal.SIGTERM),
        )

    async def watch(self, stop: asyncio.Event) -> bool:
        """Start the broker again whenever it dies, until ``stop`` is set. False once
        it died more often in a row than it may: the caller then stops everything."""
        restarts = 0
        started = time.monotonic()
        while not await _waited(stop, _POLL_S):
            code = self.proc.poll()
            if code is None:
                continue
            if time.monotonic() - started >= STABLE_S:
                restarts = 0
            if restarts == len(RESTART_BACKOFF_S):
                log.error(
                    "the embedded broker exited (%s) after %d restarts in a row: stopping",
                    _exit_status(code),
                    restarts,
                )
                return False
            delay = RESTART_BACKOFF_S[restarts]
            restarts += 1
            log.error(
                "the embedded broker exited (%s): starting it again in %g s (restart %d of %d)",
                _exit_status(code),
                delay,
                restarts,
                len(RESTART_BACKOFF_S),
            )
            if await _waited(stop, delay):
                break
            self.proc = self._spawn()
            started = time.monotonic()
            log.warning("the embedded broker was started again (pid %d)", self.proc.pid)
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


async def _waited(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; whether it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def _exit_status(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"status {code}"
