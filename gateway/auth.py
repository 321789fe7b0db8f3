"""API keys: how a key looks, how it is stored (a hash), and whom it names: a tenant,
or an operator of the platform (``alop_`` keys, which ``/v1/admin/*`` takes).

Issuing and revoking are commands the command handler decides (``ApiKeyCreateRequested``
and ``ApiKeyRevokeRequested``, then ``ApiKeyCreated``, ``ApiKeyRevoked``), keyed by the
tenant. Each gateway caches the tenant of a valid key for a minute; a revocation
reaches every gateway process as a Postgres notification from the projector, on which
each drops the tenant's cached keys, so a revoked key stops working everywhere as soon
as the projection has applied it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from cachetools import TTLCache

from projections import plans, tenants
from projections.database import Database
from schemas import billing_requests, events

KEY_PREFIX = "al_"
OPERATOR_KEY_PREFIX = "alop_"


@dataclass(frozen=True)
class Caller:
    """Whom a request's key names: a tenant, or an operator."""

    tenant_id: str | None = None
    operator_id: str | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(tenant_id: str) -> tuple[str, events.ApiKeyCreateRequested]:
    """A new key and the command that asks for it (with its hash, never the key)."""
    key = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    fact = events.ApiKeyCreateRequested(
        tenant_id=tenant_id, key_id=str(uuid.uuid4()), key_prefix=key[:7], key_hash=hash_key(key)
    )
    return key, fact


def issue_operator_key(name: str) -> tuple[str, billing_requests.OperatorCreateRequested]:
    """A new operator's key, and the request for the operator (with the key's hash)."""
    key = f"{OPERATOR_KEY_PREFIX}{secrets.token_urlsafe(32)}"
    fact = billing_requests.OperatorCreateRequested(
        operator_id=str(uuid.uuid4()),
        display_name=name,
        key_id=str(uuid.uuid4()),
        key_prefix=key[:9],
        key_hash=hash_key(key),
    )
    return key, fact


def bearer_key(authorization: str) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (the scheme in any case,
    as RFC 9110 says), or None."""
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


class ApiKeys:
    """The tenants of valid keys, cached: a database round trip per request would cost
    intake throughput. Operators' keys are looked up in the billing read models."""

    def __init__(self, db: Database, billing_db: Database) -> None:
        self.db = db
        self.billing_db = billing_db
        self._tenants: TTLCache[str, str] = TTLCache(maxsize=10_000, ttl=60)
        self._operators: TTLCache[str, str] = TTLCache(maxsize=1_000, ttl=60)

    async def caller_for(self, key: str) -> Caller | None:
        if not key.startswith(OPERATOR_KEY_PREFIX):
            tenant = await self.tenant_for(key)
            return None if tenant is None else Caller(tenant_id=tenant)
        digest = hash_key(key)
        operator = self._operators.get(digest)
        if operator is None:
            operator = await plans.operator_for_key_hash(self.billing_db, digest)
            if operator is None:
                return None
            self._operators[digest] = operator
        return Caller(operator_id=operator)

    async def tenant_for(self, key: str) -> str | None:
        digest = hash_key(key)
        tenant = self._tenants.get(digest)
        if tenant is None:
            tenant = await tenants.tenant_for_key_hash(self.db, digest)
            if tenant is not None:
                self._tenants[digest] = tenant
        return tenant

    def forget(self, tenant_id: str | None) -> None:
        """Drop the tenant's cached keys (one was revoked), or every cached key (the
        listener reconnected: a revocation may have been missed)."""
        if tenant_id is None:
            self._tenants.clear()
            return
        for digest in [d for d, t in self._tenants.items() if t == tenant_id]:
            self._tenants.pop(digest, None)
