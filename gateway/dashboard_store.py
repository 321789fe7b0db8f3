"""What the operators' dashboard keeps in Redis: its sign-in sessions, with a client of
its own and under keys of this deployment alone.

A deployment is its topic prefix and database schema: two deployments sharing a Redis
never read each other's keys, so a session cookie of one opens nothing on the other.
A session names an operator, and opens the dashboard only while that operator is in
this deployment's operators read model: checked on every request, the answer cached
for ``OPERATOR_CHECK_S`` (a session ends at most that long after its operator does).
Losing these keys loses no data: a lost session signs its operator out.
"""

from __future__ import annotations

import hashlib
import secrets

import redis.asyncio as redis
from cachetools import TTLCache

from projections import plans
from projections.database import Database
from streams.settings import Settings

SESSION_S = 12 * 3600
OPERATOR_CHECK_S = 10.0


def deployment_of(settings: Settings) -> str:
    """What tells this deployment from another on the same Redis."""
    return f"{settings.topic_prefix}|{settings.database_schema}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DashboardStore:
    def __init__(self, settings: Settings, operators: Database) -> None:
        deployment = deployment_of(settings)
        self.redis = redis.from_url(
            settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self.prefix = f"agentlog:dashboard:{deployment}:"
        # A browser sends a host's cookies to every port of it: two deployments on one
        # machine each keep a cookie of their own.
        self.cookie = f"agentlog_dashboard_{_digest(deployment)[:12]}"
        self._operators = operators
        self._known: TTLCache[str, bool] = TTLCache(maxsize=1_000, ttl=OPERATOR_CHECK_S)

    def _session(self, token: str) -> str:
        return f"{self.prefix}session:{_digest(token)}"  # the token itself is never stored

    async def open_session(self, operator_id: str) -> str:
        """A new session of the operator; its token, for the cookie."""
        token = secrets.token_urlsafe(32)
        await self.redis.set(self._session(token), operator_id, ex=SESSION_S)
        return token

    async def session_operator(self, token: str) -> str | None:
        """The operator of the session, None if it ended, expired, belongs to another
        deployment or names an operator this deployment does not have."""
        found = await self.redis.get(self._session(token))
        if found is None:
            return None
        operator = found.decode() if isinstance(found, bytes) else str(found)
        return operator if await self.operator_exists(operator) else None

    async def end_session(self, token: str) -> None:
        await self.redis.delete(self._session(token))

    async def operator_exists(self, operator_id: str) -> bool:
        known = self._known.get(operator_id)
        if known is None:
            known = await plans.operator_exists(self._operators, operator_id)
            self._known[operator_id] = known
        return known

    async def close(self) -> None:
        await self.redis.aclose()
