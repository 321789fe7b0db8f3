from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.kafka import BrokerProcess, external_bootstrap
from tests.processes import clean_environ
from tests.services import SessionServices

# Property tests explore the same examples on every run, and keep nothing on disk: a run
# that passes once passes again.
settings.register_profile("agentlog", derandomize=True, database=None)
settings.load_profile("agentlog")

# Postgres and Redis for the whole session (tests/services.py), resolved here, before the
# conftest files below (which pytest may load before any hook runs) read their URLs.
_services = SessionServices().start()


def pytest_unconfigure(config: pytest.Config) -> None:
    _services.stop()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return _services.lines


@pytest.fixture(autouse=True, scope="session")
def _no_settings_from_the_shell() -> Iterator[None]:
    """The suite's processes and in-process settings see only what tests set: an
    ``AGENTLOG_*`` the shell exported (for a platform running beside the suite, say)
    must not leak into them. ``AGENTLOG_TEST_*`` are the suite's own switches."""
    with pytest.MonkeyPatch.context() as patch:
        for name in set(os.environ) - set(clean_environ()):
            patch.delenv(name)
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The long tests first: run in parallel (``-n``), each takes a worker of its own
    # while the others share out the rest, instead of starting last and running alone.
    items.sort(key=lambda item: "slow" not in item.keywords)
    if external_bootstrap() or os.environ.get("AGENTLOG_TEST_KAFKA") == "testcontainers":
        skip = pytest.mark.skip(reason="needs the embedded broker itself, not an external Kafka")
        for item in items:
            if "broker_internal" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the Kafka the contract suite runs against."""
    external = external_bootstrap()
    if external:
        yield external
        return
    if os.environ.get("AGENTLOG_TEST_KAFKA") == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    broker = BrokerProcess(tmp_path_factory.mktemp("kafka") / "data").start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def data_home() -> Iterator[Path]:
    """A directory for the data of embedded servers, outside pytest's temporary root:
    running as root, the embedded Postgres runs as ``nobody``, which must search every
    directory above its data, and every pytest session that starts (a second suite
    beside this one) makes ``/tmp/pytest-of-<user>`` private again."""
    directory = Path(tempfile.mkdtemp(prefix="agentlog-data-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[type[BrokerProcess]]:
    """Start private brokers for one test (crash, retention and robustness tests)."""
    started: list[BrokerProcess] = []

    class _Tracked(BrokerProcess):
        def start(self, timeout: float = 20.0) -> BrokerProcess:
            started.append(self)
            return super().start(timeout)

    yield _Tracked
    for broker in started:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.kill()
            broker.proc.wait(5)


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"
