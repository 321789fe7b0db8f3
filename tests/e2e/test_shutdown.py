"""A process asked to stop stops within its bound, even when Kafka no longer answers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from projections.secrets import new_key
from tests.e2e.conftest import DATABASE_URL, Platform
from tests.eventually import eventually
from tests.kafka import REPO, BrokerProcess
from tests.processes import die_with_parent
from tests.services import redis_url

SHUTDOWN_S = 3.0


@pytest.mark.parametrize("role", [["worker", "tool"], ["worker", "model"], ["projector"]])
def test_a_role_whose_broker_is_gone_stops_on_sigterm(
    role: list[str], broker_factory: type[BrokerProcess], tmp_path: Path
) -> None:
    broker = broker_factory(tmp_path / "kafka").start()
    log = tmp_path / "role.log"
    tag = f"stop_{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlog_cli", *role],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "AGENTLOG_TOPIC_PREFIX": f"{tag}.",
            "AGENTLOG_DATABASE_URL": DATABASE_URL,
            "AGENTLOG_REDIS_URL": redis_url(),
            "AGENTLOG_DATABASE_SCHEMA": tag,
            "AGENTLOG_SECRETS_KEY": new_key(),
            "AGENTLOG_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S),
        },
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        preexec_fn=die_with_parent,
    )
    try:

        def running() -> bool:
            if proc.poll() is not None:  # fails at once, not as "not yet"
                pytest.fail(log.read_text()[-2000:])
            return "roles running" in log.read_text()

        eventually(running, "the role to start", timeout=30)
        before = len(log.read_text())
        broker.kill()
        eventually(  # its clients notice the broker is gone, and say so
            lambda: "Unable connect to node" in log.read_text()[before:],
            "the role's Kafka clients to notice the broker is gone",
            timeout=30,
        )
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(SHUTDOWN_S + 10)
        assert time.monotonic() - started < SHUTDOWN_S + 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_the_whole_platform_stops_gracefully_on_one_sigterm(platform: Platform) -> None:
    """``agentlog up`` serves the gateway beside the roles: one signal stops them all
    gracefully (uvicorn must not take it for itself and raise it again, which read as a
    second signal and cut the roles' shutdown short)."""
    platform.proc.send_signal(signal.SIGTERM)
    assert platform.proc.wait(SHUTDOWN_S + 30) == 0, platform.logs()
    assert "shutdown did not finish" not in platform.logs()
