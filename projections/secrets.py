"""Secret headers of HTTP tools, kept apart from events and read models, encrypted.

Secrets never enter a topic, so they cannot be rebuilt from the log: they live in their
own schema (``<schema>_secrets``), untouched by projection rebuilds, written by the
gateway when a tool is registered and read only by the tool worker. Each tool's headers
are sealed with Fernet (AES-128-CBC with HMAC-SHA256) under the first key of
``AGENTLOG_SECRETS_KEY``; the other keys only open what older keys sealed, so a key is
rotated by putting the new one first and running ``agentlog secrets rotate``.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from streams.logs import add_secrets
from streams.settings import Settings

from .database import Database


class SecretsKeyError(ValueError):
    pass


def new_key() -> str:
    """A fresh key in the form ``AGENTLOG_SECRETS_KEY`` takes."""
    return Fernet.generate_key().decode()


def resolve_keys(keys: str, key_file: str) -> str:
    """The configured keys, or (when none are set) the local key file's, created on
    first use: local mode needs no setting, a deployment sets the keys explicitly."""
    if keys.strip():
        return keys
    path = Path(key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked: a process starting beside this
        # one reads either no file or the whole key, and only one key ever wins.
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key())
        try:
            os.link(staged, path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    return path.read_text().strip()


def _sealer(keys: str) -> MultiFernet:
    fernets = []
    for key in (k.strip() for k in keys.split(",")):
        if not key:
            continue
        try:
            if len(base64.urlsafe_b64decode(key)) != 32:
                raise ValueError
            fernets.append(Fernet(key))
        except ValueError:
            raise SecretsKeyError(
                "AGENTLOG_SECRETS_KEY holds a key that is not 32 url-safe base64 bytes"
            ) from None
    if not fernets:
        raise SecretsKeyError("AGENTLOG_SECRETS_KEY names no key")
    return MultiFernet(fernets)


class SecretStore:
    def __init__(self, database_url: str, schema: str, keys: str) -> None:
        self.db = Database(database_url, f"{schema}_secrets")
        self._sealer = _sealer(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretStore:
        keys = resolve_keys(settings.secrets_key, settings.secrets_key_file)
        return cls(settings.database_url, settings.database_schema, keys)

    async def close(self) -> None:
        await self.db.close()

    def _query(self, text: str) -> bytes:
        return self.db.statement(text)

    async def ensure(self) -> None:
        """Create the table, and seal headers an older version stored in plain JSON."""
        async with self.db.connection() as conn:
            await conn.execute(self._query("CREATE SCHEMA IF NOT EXISTS {s}"))
            await conn.execute(
                self._query(
                    "CREATE TABLE IF NOT EXISTS {s}.tool_headers (tenant_id text NOT NULL,"
                    " tool_id text NOT NULL, sealed bytea, PRIMARY KEY (tenant_id, tool_id))"
                )
            )
            await conn.execute(
                self._query("ALTER TABLE {s}.tool_headers ADD COLUMN IF NOT EXISTS sealed bytea")
            )
            plain = await (
                await conn.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = %s"
                    " AND table_name = 'tool_headers' AND column_name = 'headers'",
                    (self.db.schema,),
                )
            ).fetchone()
            if plain:
                async with conn.transaction():
                    rows = await (
                        await conn.execute(
                            self._query("SELECT tenant_id, tool_id, headers FROM {s}.tool_headers")
                        )
                    ).fetchall()
                    for row in rows:
                        await conn.execute(
                            self._query(
                                "UPDATE {s}.tool_headers SET sealed = %s"
                                " WHERE tenant_id = %s AND tool_id = %s"
                            ),
                            (self._seal(row["headers"] or {}), row["tenant_id"], row["tool_id"]),
                        )
                    await conn.execute(self._query("ALTER TABLE {s}.tool_headers DROP headers"))

    def _seal(self, headers: dict[str, str]) -> bytes:
        return self._sealer.encrypt(json.dumps(headers).encode())

    def _open(self, sealed: bytes) -> dict[str, str]:
        try:
            headers: dict[str, str] = json.loads(self._sealer.decrypt(bytes(sealed)))
        except InvalidToken:
            raise SecretsKeyError(
                "a tool's secrets were sealed with a key AGENTLOG_SECRETS_KEY does not hold"
            ) from None
        add_secrets(*headers.values())
        return headers

    async def put(self, tenant_id: str, tool_id: str, headers: dict[str, str]) -> None:
        add_secrets(*headers.values())
        async with self.db.connection() as conn:
            await conn.execute(
                self._query(
                    "INSERT INTO {s}.tool_headers (tenant_id, tool_id, sealed) VALUES (%s, %s, %s)"
                    " ON CONFLICT (tenant_id, tool_id) DO UPDATE SET sealed = EXCLUDED.sealed"
                ),
                (tenant_id, tool_id, self._seal(headers)),
            )

    async def delete(self, tenant_id: str, tool_id: str) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                self._query("DELETE FROM {s}.tool_headers WHERE tenant_id = %s AND tool_id = %s"),
                (tenant_id, tool_id),
            )

    async def get(self, tenant_id: str, tool_id: str) -> dict[str, str]:
        async with self.db.connection() as conn:
            row = await (
                await conn.execute(
                    self._query(
                        "SELECT sealed FROM {s}.tool_headers WHERE tenant_id = %s AND tool_id = %s"
                    ),
                    (tenant_id, tool_id),
                )
            ).fetchone()
        return self._open(row["sealed"]) if row else {}

    async def rotate(self) -> int:
        """Seal every tool's headers again under the first key; return how many. Run it
        after putting a new key first in ``AGENTLOG_SECRETS_KEY``; then the old key can
        be dropped from the setting."""
        async with self.db.connection() as conn, conn.transaction():
            rows = await (
                await conn.execute(
                    self._query(
                        "SELECT tenant_id, tool_id, sealed FROM {s}.tool_headers FOR UPDATE"
                    )
                )
            ).fetchall()
            for row in rows:
                tenant_id, tool_id = row["tenant_id"], row["tool_id"]
                try:
                    rotated = self._sealer.rotate(bytes(row["sealed"]))
                except InvalidToken:
                    raise SecretsKeyError(
                        f"tool {tool_id} was sealed with a key AGENTLOG_SECRETS_KEY does not hold"
                    ) from None
                await conn.execute(
                    self._query(
                        "UPDATE {s}.tool_headers SET sealed = %s"
                        " WHERE tenant_id = %s AND tool_id = %s"
                    ),
                    (rotated, tenant_id, tool_id),
                )
        return len(rows)
