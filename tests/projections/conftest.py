"""A fresh, migrated Postgres schema per test, dropped afterwards (with its ``_secrets``
companion), so projection tests can run in parallel against the machine's Postgres; and
the store and databases over it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, sql

from projections.database import Database
from projections.migrate import upgrade
from projections.store import ProjectionStore
from tests.services import database_url as session_database_url

from .conversation import Ids, Log, conversation, model_answers

DATABASE_URL = session_database_url()


@pytest.fixture
def database_url() -> str:
    return DATABASE_URL


@pytest.fixture
def make_schema() -> Iterator[Callable[[], str]]:
    """Migrate a new schema on each call; every one is dropped when the test ends."""
    created: list[str] = []

    def make() -> str:
        name = f"proj_{uuid.uuid4().hex[:12]}"
        created.append(name)  # before migrating, so a half-made schema is dropped too
        upgrade(DATABASE_URL, name)
        return name

    yield make
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        for name in created:
            for dropped in (name, f"{name}_secrets"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(dropped))
                )


@pytest.fixture
def schema(make_schema: Callable[[], str]) -> str:
    return make_schema()


@pytest.fixture
async def db() -> AsyncIterator[AsyncConnection[Any]]:
    """A plain connection (tuple rows, autocommit) for looking at what a test wrote."""
    conn = await AsyncConnection.connect(DATABASE_URL, autocommit=True)
    yield conn
    await conn.close()


@pytest.fixture
async def store(database_url: str, schema: str) -> AsyncIterator[ProjectionStore]:
    """The live store: it takes the swap lock and sends notifications."""
    store = ProjectionStore(database_url, schema)
    yield store
    await store.close()


@pytest.fixture
async def unscoped(database_url: str, schema: str) -> AsyncIterator[Database]:
    """The workers' database: they work for every tenant."""
    database = Database(database_url, schema)
    yield database
    await database.close()


@pytest.fixture
async def scoped(database_url: str, schema: str) -> AsyncIterator[Database]:
    """The gateway's database. One pooled connection, so that every query reuses the
    connection the previous one scoped to its tenant."""
    database = Database(database_url, schema, tenant_scoped=True, pool_size=1)
    yield database
    await database.close()


@pytest.fixture
async def two_tenants(store: ProjectionStore) -> tuple[Ids, Ids]:
    """Two tenants, each with a whole conversation and its model calls, applied through
    the store: tenant A's on partition 0 of each topic, tenant B's on partition 1."""
    a, b = Ids.new("a"), Ids.new("b")
    log = Log()
    for ids, partition in ((a, 0), (b, 1)):
        said = [*conversation(ids).values(), *model_answers(ids)]
        await store.apply(log.extend(said, partition=partition))
    return a, b
