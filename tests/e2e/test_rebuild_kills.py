"""A rebuild or a billing replay killed with SIGKILL at any point (its processes folding
in memory, its load, its verification under the swap lock) leaves the live tables as
they were; the next run gives the same tables, and swaps them in."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from projections.rebuild import table_hashes
from projections.secrets import new_key
from streams.catalog import Catalog
from streams.settings import Settings
from tests.bench.bench_billing import plans_and_requests, produce_usage
from tests.bench.bench_rebuild import produce
from tests.e2e.conftest import DATABASE_URL, drop_schemas
from tests.kafka import REPO
from tests.services import redis_url
from workers.runner import prepare

pytestmark = pytest.mark.slow
RECORDS = 55_000  # enough for the bulk pass to fold in a process per core
KILLS = 2


@pytest.fixture
def tag() -> Iterator[str]:
    name = f"kills_{uuid.uuid4().hex[:10]}"
    yield name
    drop_schemas(name)


def hashes(schema: str) -> dict[str, str]:
    async def run() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
            return await table_hashes(conn, schema)

    return asyncio.run(run())


def schemas(like: str) -> set[str]:
    with psycopg.connect(DATABASE_URL) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (like,)
        ).fetchall()
    return {str(name) for (name,) in rows}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["core", "billing"])
def test_a_rebuild_killed_anywhere_leaves_the_live_tables_and_the_next_gives_the_same(
    bootstrap: str, tag: str, name: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"{tag}.",
        database_url=DATABASE_URL,
        database_schema=tag,
        secrets_key=new_key(),  # not the working tree's .agentlog/
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTLOG_TOPIC_PREFIX": settings.topic_prefix,
        "AGENTLOG_DATABASE_URL": DATABASE_URL,
        "AGENTLOG_REDIS_URL": redis_url(),
        "AGENTLOG_DATABASE_SCHEMA": tag,
        "AGENTLOG_LOG_LEVEL": "WARNING",
        "AGENTLOG_SECRETS_KEY": settings.secrets_key,
    }
    asyncio.run(prepare(settings))
    catalog = Catalog.from_settings(settings)
    if name == "core":
        live = settings.database_schema
        for topic in (catalog.commands, catalog.events):
            produce(bootstrap, catalog, RECORDS, 200, topic)
        command = ["projections", "rebuild", "core", "--no-swap"]
        swapping = ["projections", "rebuild", "core"]
    else:
        live = settings.billing_schema
        tenants = [f"tenant-{n:02d}" for n in range(50)]
        asyncio.run(plans_and_requests(bootstrap, catalog, tenants))
        produce_usage(bootstrap, catalog.usage, tenants, RECORDS)
        command = ["replay", "billing"]
        swapping = ["replay", "billing", "--swap"]

    def agentlog(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "agentlog_cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        return done

    # The live tables: the log folded once, swapped in over the empty ones.
    agentlog("projections", "rebuild", name, "--changed", ",".join(hashes(live)))
    before = hashes(live)
    assert before["applied_events"] != ""

    started = time.monotonic()
    said = agentlog(*command).stdout
    whole = time.monotonic() - started
    assert "folded in memory" in said, said
    reference = hashes(f"{live}_rebuild")
    assert reference == before

    old = schemas(f"{live}_old_%")  # what the first swap set aside
    rng = random.Random(uuid.uuid4().int)
    for _ in range(KILLS):
        run = subprocess.Popen(
            [sys.executable, "-m", "agentlog_cli", *command],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.15, 0.95) * whole)
        run.kill()
        run.wait(10)
        assert hashes(live) == before
        assert schemas(f"{live}_old_%") == old  # nothing swapped

    agentlog(*swapping)
    assert hashes(live) == reference
    assert len(schemas(f"{live}_old_%") - old) == 1
