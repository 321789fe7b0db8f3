"""Idempotent writes: a request retried with the same ``Idempotency-Key`` creates nothing
new.

The ids a request creates (resource ids and its commands' event ids) are derived from
the tenant and the key, so a retry records the very same commands: the command handler
skips a command whose outcome is in the log, and every consumer drops an event id it
has applied. Correctness needs nothing else. Redis remembers, for a day, a fingerprint
of the request that first used a key, so that reusing it for a different request is
refused (``IDEMPOTENCY_KEY_REUSED``) rather than silently answered with the first
request's result; if Redis is unreachable that check is skipped, never the request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from schemas.envelope import derived_id
from schemas.errors import DomainError, ErrorCode

log = logging.getLogger(__name__)
KEY_TTL_S = 24 * 3600


def request_ids(tenant_id: str, key: str | None, *names: str) -> dict[str, str]:
    """One id per name: random without a key, derived from tenant and key with one."""
    if key is None:
        return {name: str(uuid.uuid4()) for name in names}
    return {name: derived_id(f"{tenant_id}/{key}", name) for name in names}


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, redis_url: str) -> None:
        self.redis = redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    async def check(
        self,
        tenant_id: str,
        key: str,
        request: str,
        code: ErrorCode = ErrorCode.IDEMPOTENCY_KEY_REUSED,
    ) -> None:
        """Remember ``request`` (a fingerprint) under the key; refuse a different one
        with ``code``."""
        name = f"agentlog:idempotency:{tenant_id}:{key}"
        try:
            if await self.redis.set(name, request, nx=True, ex=KEY_TTL_S):
                return
            first = await self.redis.get(name)
        except RedisError as exc:
            log.warning("idempotency keys unavailable; check skipped", extra={"error": repr(exc)})
            return
        if first is not None and (first.decode() if isinstance(first, bytes) else first) != request:
            raise DomainError(code, f"{key!r} was used for a different request")

    async def ids(
        self, tenant_id: str, key: str | None, request: tuple[str, str, Any], *names: str
    ) -> dict[str, str]:
        """The ids a request creates (one per name), after refusing a key that was used
        for another request; ``request`` is its method, path and body."""
        if key is not None:
            await self.check(tenant_id, key, fingerprint(*request))
        return request_ids(tenant_id, key, *names)

    async def close(self) -> None:
        await self.redis.aclose()
