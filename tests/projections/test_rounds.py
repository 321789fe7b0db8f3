"""A batch's row operations planned as rounds of set-based statements
(``projections.rounds``) leave the rows the operations leave applied one by one in the
order they came, and no statement touches a row twice. Rows are kept in memory here,
as the store's statements would keep them: the store's own tests (``test_bulk``) check
the same on Postgres, for the folds' operations."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from psycopg import AsyncConnection, sql

from projections.migrate import BILLING_SCRIPTS, upgrade
from projections.ops import Add, Update, Upsert
from projections.rounds import Rounds, RowOp

from .conftest import DATABASE_URL

# Two tables keyed by ``id``; ``tag`` is no key (an update by it may touch any row).
PRIMARY_KEYS = {"a": ("id",), "b": ("id",)}
Tables = dict[str, dict[Any, dict[str, Any]]]

tables = st.sampled_from(["a", "b"])
ids = st.integers(0, 3)
values = st.integers(0, 9)


@st.composite
def operations(draw: st.DrawFn) -> RowOp:
    table, id_ = draw(tables), draw(ids)
    kind = draw(st.sampled_from(["insert", "overwrite", "update", "update-by-tag", "add"]))
    if kind == "insert":
        return Upsert(table, ("id",), {"id": id_, "x": draw(values), "tag": draw(values) % 2})
    if kind == "overwrite":
        return Upsert(table, ("id",), {"id": id_, "x": draw(values), "tag": 0}, ("x",))
    if kind == "update":
        return Update(table, {"id": id_}, {"x": draw(values)})
    if kind == "update-by-tag":
        return Update(table, {"tag": draw(values) % 2}, {"x": draw(values)})
    return Add("counters", ("id",), {"id": id_, "n": draw(values)}, ("n",))


def apply(rows: Tables, op: RowOp) -> None:
    """One operation, as its statement does it."""
    table = rows.setdefault(op.table, {})
    if isinstance(op, Update):
        for row in table.values():
            if all(row.get(c) == v for c, v in op.key.items()):
                row.update(op.values)
        return
    found = table.get(op.row["id"])
    if found is None:
        table[op.row["id"]] = dict(op.row)
    elif isinstance(op, Add):
        for c in op.sums:
            found[c] += op.row[c]
    else:
        found.update({c: op.row[c] for c in op.overwrite})


@given(st.lists(operations(), max_size=30))
def test_rounds_leave_the_rows_one_by_one_leaves(ops: list[RowOp]) -> None:
    in_order: Tables = {}
    for op in ops:
        apply(in_order, op)

    rounds = Rounds({**PRIMARY_KEYS, "counters": ("id",)})
    for op in ops:
        rounds.add(op)
    planned: Tables = {}
    statements = rounds.groups()
    for group in statements:
        touched = [
            op.key["id"] if isinstance(op, Update) else op.row["id"]
            for op in group.ops
            if not isinstance(op, Update) or "id" in op.key
        ]
        assert len(touched) == len(set(touched)), "a statement touches a row twice"
        if any(isinstance(op, Update) and "id" not in op.key for op in group.ops):
            assert len(group.ops) == 1, "an update that may touch any row goes alone"
        for op in group.ops:
            apply(planned, op)

    assert planned == in_order
    assert sum(len(g.ops) for g in statements) == len(ops)


async def test_the_read_models_have_no_foreign_keys_and_no_triggers(
    schema: str, db: AsyncConnection[Any]
) -> None:
    """Rounds order a batch's operations by row and by table, not across tables: a
    foreign key or a trigger would make that order matter. One added to a read model
    must come with a planner that orders by it."""
    billing = f"{schema}_billing"
    await asyncio.to_thread(upgrade, DATABASE_URL, billing, BILLING_SCRIPTS)
    schemas = [schema, billing]
    try:
        found = await (
            await db.execute(
                "SELECT n.nspname, c.conname FROM pg_constraint c"
                " JOIN pg_namespace n ON n.oid = c.connamespace"
                " WHERE c.contype = 'f' AND n.nspname = ANY(%s)"
                " UNION ALL SELECT n.nspname, t.tgname FROM pg_trigger t"
                " JOIN pg_class r ON r.oid = t.tgrelid"
                " JOIN pg_namespace n ON n.oid = r.relnamespace"
                " WHERE NOT t.tgisinternal AND n.nspname = ANY(%s)",
                (schemas, schemas),
            )
        ).fetchall()
    finally:
        await db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(billing)))
    assert found == []
