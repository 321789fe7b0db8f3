"""A fresh, migrated Postgres schema per test, dropped afterwards (with its ``_secrets``
companion), so projection tests can run in parallel against the machine's Postgres."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, sql

from projections.migrate import upgrade

DATABASE_URL = os.environ.get(
    "AGENTLOG_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


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
