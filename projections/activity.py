"""The operators' activity read model: turns and model calls summed over spans of 1, 10
and 60 minutes, so that a window of a day reads a few thousand rows whatever the number
of turns in it.

- ``turn_activity``: turns by tenant, agent, outcome and error code, with their summed
  latency and tokens;
- ``turn_latency``: turns by outcome and latency bucket, every tenant's together (the
  percentiles of the overview);
- ``model_activity``: model calls by provider, model, outcome, error code and latency
  bucket, with their tokens.

All three are counters (``Add``). Latency buckets are an eighth of a doubling wide (9 %
apart), so percentiles read from them are within ±4.5 %; latency sums are whole
milliseconds, so live tables and a rebuild add up to the same rows. A turn's or a model
call's latency runs from the time of its request's event to that of its end's: the end
carries the request's time (``requested_at``), never a measured duration, so that a call
performed again after a crash records the same payload. A model call's latency so
includes any wait for a model worker; the provider's own is the model worker's
``agentlog_model_call_seconds``. Facts recorded before ends carried the time are
counted, in latency bucket -1. The two tables without a tenant are the operators' alone.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Sequence
from typing import Any

from schemas import events

from .ops import Add, Context, Op, folds
from .rows import ALL_TENANTS, Reader, Row
from .turns import ModelCallStatus, TurnStatus

SPANS = (1, 10, 60)  # minutes
BUCKETS_PER_DOUBLING = 8
UNTIMED = -1  # the bucket of a fact that does not say how long it took
_TOKENS = ("input_tokens", "cached_input_tokens", "output_tokens")
_MODEL_SUMS = ("calls", "latency_ms", *_TOKENS)


def span_for(window_minutes: int) -> int:
    """The span a window is read in: about 15 to 60 points whatever its length."""
    return next((span for span in SPANS if window_minutes <= 60 * span), SPANS[-1])


def span_start(time: datetime.datetime, span: int) -> datetime.datetime:
    """The start of the ``span``-minute span (aligned to the hour) that holds ``time``."""
    utc = time.astimezone(datetime.UTC)
    return utc.replace(minute=utc.minute - utc.minute % span, second=0, microsecond=0)


def bucket(ms: float) -> int:
    """The latency bucket of ``ms`` milliseconds (below 1 ms: bucket 0)."""
    return math.floor(math.log2(ms) * BUCKETS_PER_DOUBLING) if ms > 1 else 0


def bucket_ms(index: int) -> float:
    """The latency a bucket stands for: the geometric middle of its bounds."""
    return float(2 ** ((index + 0.5) / BUCKETS_PER_DOUBLING))


def quantiles(histogram: Iterable[tuple[int, int]], qs: Sequence[float]) -> list[float | None]:
    """The ``qs`` quantiles, in ms, of a histogram of (bucket, count); None for none."""
    counts = sorted((b, n) for b, n in histogram if b != UNTIMED and n > 0)
    total = sum(n for _b, n in counts)
    found: list[float | None] = []
    for q in qs:
        if not total:
            found.append(None)
            continue
        rank, seen = q * total, 0
        for index, n in counts:
            seen += n
            if seen >= rank:
                found.append(bucket_ms(index))
                break
    return found


def _spans(
    table: str,
    key: tuple[str, ...],
    row: dict[str, Any],
    sums: tuple[str, ...],
    time: datetime.datetime,
) -> list[Op]:
    """The row added to each span that holds ``time``."""
    return [
        Add(
            table,
            ("span", "start", *key),
            {"span": span, "start": span_start(time, span), **row},
            sums,
        )
        for span in SPANS
    ]


# -- folds ----------------------------------------------------------------------------


def _since(requested: datetime.datetime | None, ctx: Context) -> float | None:
    """Milliseconds from ``requested`` to the event (None if it is not known)."""
    return None if requested is None else max((ctx.time - requested).total_seconds() * 1000, 0)


def _turn(
    ctx: Context,
    agent_id: str,
    outcome: TurnStatus,
    *,
    requested: datetime.datetime | None = None,
    code: str = "",
    usage: events.UsageValue | None = None,
) -> list[Op]:
    ms = _since(requested, ctx)
    used = usage or events.UsageValue()
    counted = {
        "tenant_id": ctx.tenant_id,
        "agent_id": agent_id,
        "outcome": outcome.value,
        "error_code": code,
        "turns": 1,
        "latency_ms": 0 if ms is None else round(ms),
        "input_tokens": used.input_tokens,
        "output_tokens": used.output_tokens,
    }
    timed = {
        "outcome": outcome.value,
        "latency_bucket": UNTIMED if ms is None else bucket(ms),
        "turns": 1,
    }
    return [
        *_spans(
            "turn_activity",
            ("tenant_id", "agent_id", "outcome", "error_code"),
            counted,
            ("turns", "latency_ms", "input_tokens", "output_tokens"),
            ctx.time,
        ),
        *_spans("turn_latency", ("outcome", "latency_bucket"), timed, ("turns",), ctx.time),
    ]


@folds(events.TurnCompleted)
def _completed(data: events.TurnCompleted, ctx: Context) -> list[Op]:
    return _turn(
        ctx, data.agent_id, TurnStatus.COMPLETED, requested=data.requested_at, usage=data.usage
    )


@folds(events.TurnFailed)
def _failed(data: events.TurnFailed, ctx: Context) -> list[Op]:
    return _turn(
        ctx,
        data.agent_id,
        TurnStatus.FAILED,
        requested=data.requested_at,
        code=data.code,
        usage=data.usage,
    )


@folds(events.TurnCancelled)
def _cancelled(data: events.TurnCancelled, ctx: Context) -> list[Op]:
    return _turn(ctx, data.agent_id, TurnStatus.CANCELLED, requested=data.requested_at)


@folds(events.TurnRejected)
def _rejected(data: events.TurnRejected, ctx: Context) -> list[Op]:
    return _turn(ctx, data.agent_id, TurnStatus.REJECTED, code=data.code)  # at once: untimed


@folds(events.ModelCallCompleted, events.ModelCallFailed)
def _model_call(data: events.ModelCallCompleted | events.ModelCallFailed, ctx: Context) -> list[Op]:
    failed = isinstance(data, events.ModelCallFailed)
    ms = _since(data.requested_at, ctx)
    row = {
        "provider": data.provider,
        "model": data.model,
        "outcome": (ModelCallStatus.FAILED if failed else ModelCallStatus.COMPLETED).value,
        "error_code": data.code if isinstance(data, events.ModelCallFailed) else "",
        "latency_bucket": UNTIMED if ms is None else bucket(ms),
        "calls": 1,
        "latency_ms": 0 if ms is None else round(ms),
        "input_tokens": data.usage.input_tokens,
        "cached_input_tokens": data.usage.cached_input_tokens,
        "output_tokens": data.usage.output_tokens,
    }
    key = ("provider", "model", "outcome", "error_code", "latency_bucket")
    return _spans("model_activity", key, row, _MODEL_SUMS, ctx.time)


# -- queries --------------------------------------------------------------------------


class SpanRow(Row):
    start: datetime.datetime
    completed: int
    failed: int
    cancelled: int


class BucketRow(Row):
    outcome: TurnStatus
    latency_bucket: int
    turns: int


class Latency(Row):
    finished: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None


class TenantTurnsRow(Row):
    tenant_id: str
    name: str
    turns: int
    failed: int
    input_tokens: int
    output_tokens: int


class AgentTurnsRow(Row):
    tenant_id: str
    tenant_name: str
    agent_id: str
    agent_name: str | None
    turns: int
    failed: int
    input_tokens: int
    output_tokens: int


class FailureRow(Row):
    error_code: str
    turns: int


class ModelBucketRow(Row):
    provider: str
    model: str
    latency_bucket: int
    calls: int
    failed: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


class ModelRow(Row):
    provider: str
    model: str
    calls: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


# Turns that ended in the window, as the overview counts them: rejected at once aside.
# Every query names the span its window is read in, and the window's first span start.
_ENDED = f"span = %s AND start >= %s AND outcome <> '{TurnStatus.REJECTED}'"


def _sum_of(outcome: str, counter: str = "turns") -> str:
    """The sum of ``counter`` over the rows of one outcome, 0 when there are none."""
    return f"coalesce(sum({counter}) FILTER (WHERE outcome = '{outcome}'), 0)::bigint"


_SUMS = (
    f"sum(turns)::bigint AS turns, {_sum_of(TurnStatus.FAILED)} AS failed,"
    " sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens"
)


async def turns_per_span(db: Reader, span: int, since: datetime.datetime) -> list[SpanRow]:
    """Turns that ended in each span since ``since``, by how they ended."""
    return await db.rows(
        SpanRow,
        ALL_TENANTS,
        f"SELECT start, {_sum_of(TurnStatus.COMPLETED)} AS completed,"
        f" {_sum_of(TurnStatus.FAILED)} AS failed, {_sum_of(TurnStatus.CANCELLED)} AS cancelled"
        f" FROM {{s}}.turn_latency WHERE {_ENDED} GROUP BY start ORDER BY start",
        span,
        since,
    )


async def latency(db: Reader, span: int, since: datetime.datetime) -> Latency:
    """How many turns ended since ``since``, how many failed, and the p50 and p99 of
    their time from request to end."""
    histogram = await db.rows(
        BucketRow,
        ALL_TENANTS,
        "SELECT outcome, latency_bucket, sum(turns)::bigint AS turns"
        f" FROM {{s}}.turn_latency WHERE {_ENDED} GROUP BY outcome, latency_bucket",
        span,
        since,
    )
    p50, p99 = quantiles(((r.latency_bucket, r.turns) for r in histogram), (0.5, 0.99))
    return Latency(
        finished=sum(r.turns for r in histogram),
        failed=sum(r.turns for r in histogram if r.outcome is TurnStatus.FAILED),
        p50_ms=p50,
        p99_ms=p99,
    )


async def tenants_since(
    db: Reader, span: int, since: datetime.datetime, limit: int
) -> list[TenantTurnsRow]:
    """The busiest tenants since ``since``: turns ended, failures and tokens."""
    return await db.rows(
        TenantTurnsRow,
        ALL_TENANTS,
        # Summed first, named after: the join then touches only the tenants shown.
        "SELECT t.tenant_id, coalesce(n.display_name, t.tenant_id) AS name, t.turns,"
        " t.failed, t.input_tokens, t.output_tokens FROM ("
        f" SELECT tenant_id, {_SUMS} FROM {{s}}.turn_activity WHERE {_ENDED}"
        " GROUP BY tenant_id ORDER BY turns DESC, tenant_id LIMIT %s) t"
        " LEFT JOIN {s}.tenants n ON n.tenant_id = t.tenant_id"
        " ORDER BY t.turns DESC, t.tenant_id",
        span,
        since,
        limit,
    )


async def agents_since(
    db: Reader, span: int, since: datetime.datetime, limit: int
) -> list[AgentTurnsRow]:
    """The busiest agents since ``since``, with their names and their tenants'."""
    return await db.rows(
        AgentTurnsRow,
        ALL_TENANTS,
        "SELECT t.*, coalesce(n.display_name, t.tenant_id) AS tenant_name,"
        " a.config ->> 'name' AS agent_name FROM ("
        f" SELECT tenant_id, agent_id, {_SUMS} FROM {{s}}.turn_activity WHERE {_ENDED}"
        " GROUP BY tenant_id, agent_id ORDER BY turns DESC, tenant_id, agent_id LIMIT %s) t"
        " LEFT JOIN {s}.tenants n ON n.tenant_id = t.tenant_id"
        " LEFT JOIN {s}.agents a ON a.agent_id = t.agent_id"
        " ORDER BY t.turns DESC, t.tenant_id, t.agent_id",
        span,
        since,
        limit,
    )


async def failures(db: Reader, span: int, since: datetime.datetime, limit: int) -> list[FailureRow]:
    """Failed turns since ``since`` by error code, the commonest first."""
    return await db.rows(
        FailureRow,
        ALL_TENANTS,
        "SELECT error_code, sum(turns)::bigint AS turns FROM {s}.turn_activity"
        f" WHERE span = %s AND start >= %s AND outcome = '{TurnStatus.FAILED}'"
        " GROUP BY error_code ORDER BY turns DESC, error_code LIMIT %s",
        span,
        since,
        limit,
    )


async def models_since(
    db: Reader, span: int, since: datetime.datetime, limit: int
) -> list[ModelRow]:
    """Model calls since ``since`` per provider and model, the busiest ``limit``: calls,
    failures, p50 and p99 latency, tokens."""
    rows = await db.rows(
        ModelBucketRow,
        ALL_TENANTS,
        "SELECT provider, model, latency_bucket, sum(calls)::bigint AS calls,"
        f" {_sum_of(ModelCallStatus.FAILED, 'calls')} AS failed,"
        " sum(input_tokens)::bigint AS input_tokens,"
        " sum(cached_input_tokens)::bigint AS cached_input_tokens,"
        " sum(output_tokens)::bigint AS output_tokens"
        " FROM {s}.model_activity WHERE span = %s AND start >= %s GROUP BY 1, 2, 3",
        span,
        since,
    )
    by_model: dict[tuple[str, str], list[ModelBucketRow]] = {}
    for row in rows:
        by_model.setdefault((row.provider, row.model), []).append(row)
    found = []
    for (provider, model), buckets in by_model.items():
        p50, p99 = quantiles(((b.latency_bucket, b.calls) for b in buckets), (0.5, 0.99))
        sums: dict[str, Any] = {
            column: sum(getattr(b, column) for b in buckets)
            for column in ("calls", "failed", *_TOKENS)
        }
        found.append(ModelRow(provider=provider, model=model, p50_ms=p50, p99_ms=p99, **sums))
    return sorted(found, key=lambda m: (-m.calls, m.provider, m.model))[:limit]
