"""Typed rows of the read models, and the reader their queries run on.

A read model's queries are plain functions over a ``Reader`` (``projections.database``
provides it), so the modules that define state, folds and queries import no database
driver: the command handler's decisions use the same typed state without I/O.
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict


class Row(BaseModel):
    """A row as a query returns it; columns the type does not name are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


R = TypeVar("R", bound=Row)

# The scope of a query that reads every tenant's rows: an operator's (billing). The
# gateway's connections admit it to the billing tables only (row-level security).
ALL_TENANTS = "*"


def scoped(tenant_id: str, where: str, params: list[Any]) -> tuple[str, list[Any]]:
    """``where`` narrowed to the tenant's rows, unless the scope is every tenant's."""
    if tenant_id == ALL_TENANTS:
        return where, params
    return f"{where} AND tenant_id = %s", [*params, tenant_id]


class Reader(Protocol):
    """Runs a read model's queries. ``{s}`` in a query names the read models' schema;
    ``tenant_id`` scopes the connection to that tenant where row-level security binds it
    (None: no tenant's rows), on top of the query's own tenant filter."""

    tenant_scoped: bool

    async def rows(
        self, row: type[R], tenant_id: str | None, query: str, *params: Any
    ) -> list[R]: ...

    async def row(
        self, row: type[R], tenant_id: str | None, query: str, *params: Any
    ) -> R | None: ...

    async def value(self, tenant_id: str | None, query: str, *params: Any) -> Any: ...

    async def tuples(
        self, tenant_id: str | None, query: str, *params: Any
    ) -> list[tuple[Any, ...]]:
        """The rows as tuples of their columns, unchecked: for reads of many rows whose
        every microsecond counts (a draft prices a month of usage)."""
        ...


async def created_page(
    db: Reader,
    row: type[R],
    table: str,
    id_column: str,
    tenant_id: str,
    limit: int,
    after: tuple[datetime.datetime, str] | None,
) -> list[R]:
    """A page of the tenant's rows of ``table`` in creation order, after the
    (created_at, id) of the last row seen; ``table`` and ``id_column`` are the code's."""
    where = (
        f"tenant_id = %s AND (created_at, {id_column}) > (%s, %s)" if after else "tenant_id = %s"
    )
    query = f"SELECT * FROM {{s}}.{table} WHERE {where} ORDER BY created_at, {id_column} LIMIT %s"
    return await db.rows(row, tenant_id, query, tenant_id, *(after or ()), limit)
