"""Tool secrets at rest: sealed, opened only with a key the setting holds, rotated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection

from projections.secrets import SecretsKeyError, SecretStore, new_key, resolve_keys
from streams.logs import redact

HEADERS = {"Authorization": "Bearer tool-token-0123456789", "X-Api-Key": "k-9f8e7d6c5b4a"}


async def stored(db: AsyncConnection[Any], schema: str) -> list[bytes]:
    rows = await (
        await db.execute(f'SELECT sealed FROM "{schema}_secrets".tool_headers')
    ).fetchall()
    return [bytes(r[0]) for r in rows]


async def test_secrets_are_sealed_at_rest_and_open_with_the_key(
    database_url: str, schema: str, db: AsyncConnection[Any]
) -> None:
    store = SecretStore(database_url, schema, new_key())
    try:
        await store.ensure()
        await store.put("tenant-a", "tool-1", HEADERS)
        (sealed,) = await stored(db, schema)
        for value in HEADERS.values():
            assert value.encode() not in sealed
        assert await store.get("tenant-a", "tool-1") == HEADERS
        assert await store.get("tenant-b", "tool-1") == {}
        # What the store has handled is redacted from every log line from then on.
        assert "k-9f8e7d6c5b4a" not in redact("header X-Api-Key: k-9f8e7d6c5b4a")
    finally:
        await store.close()


async def test_rotation_seals_again_under_the_new_key(
    database_url: str, schema: str, db: AsyncConnection[Any]
) -> None:
    old, new = new_key(), new_key()
    before = SecretStore(database_url, schema, old)
    during = SecretStore(database_url, schema, f"{new},{old}")
    after = SecretStore(database_url, schema, new)
    try:
        await before.ensure()
        await before.put("tenant-a", "tool-1", HEADERS)
        with pytest.raises(SecretsKeyError):
            await after.get("tenant-a", "tool-1")  # not yet rotated: the old key is needed
        assert await during.get("tenant-a", "tool-1") == HEADERS
        (sealed_before,) = await stored(db, schema)

        assert await during.rotate() == 1

        (sealed_after,) = await stored(db, schema)
        assert sealed_after != sealed_before
        assert await after.get("tenant-a", "tool-1") == HEADERS
        with pytest.raises(SecretsKeyError):
            await before.get("tenant-a", "tool-1")
    finally:
        for store in (before, during, after):
            await store.close()


async def test_headers_an_older_version_stored_in_plain_json_are_sealed(
    database_url: str, schema: str, db: AsyncConnection[Any]
) -> None:
    await db.execute(f'CREATE SCHEMA "{schema}_secrets"')
    await db.execute(
        f'CREATE TABLE "{schema}_secrets".tool_headers (tenant_id text NOT NULL,'
        " tool_id text NOT NULL, headers jsonb NOT NULL, PRIMARY KEY (tenant_id, tool_id))"
    )
    await db.execute(
        f'INSERT INTO "{schema}_secrets".tool_headers VALUES'
        """ ('tenant-a', 'tool-1', '{"X-Api-Key": "k-plain-0001"}')"""
    )
    store = SecretStore(database_url, schema, new_key())
    try:
        await store.ensure()
        (sealed,) = await stored(db, schema)
        assert b"k-plain-0001" not in sealed
        assert await store.get("tenant-a", "tool-1") == {"X-Api-Key": "k-plain-0001"}
    finally:
        await store.close()


def test_a_key_that_is_not_a_fernet_key_is_refused() -> None:
    with pytest.raises(SecretsKeyError, match="32 url-safe base64 bytes"):
        SecretStore("postgresql://unused", "s", "not-a-key")
    with pytest.raises(SecretsKeyError, match="names no key"):
        SecretStore("postgresql://unused", "s", " , ")


def test_local_mode_creates_its_key_once(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "secrets.key"
    first = resolve_keys("", str(key_file))
    assert resolve_keys("", str(key_file)) == first
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert resolve_keys("explicit", str(key_file)) == "explicit"
