"""The activity read model: what a turn's or a model call's end adds to the spans that
hold it, the span a window is read in, and the percentiles read back from the latency
histogram."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections import activity
from projections.ops import Add, project
from schemas import events
from schemas.base import Fact

from .fold_context import CTX

IDS: dict[str, Any] = {"session_id": "session-1", "turn_id": "turn-1"}
USED = events.UsageValue(input_tokens=120, output_tokens=30, cached_input_tokens=20)


def activity_of(data: Fact) -> list[Add]:
    """The activity read model's operations for ``data`` (other read models aside)."""
    tables = {"turn_activity", "turn_latency", "model_activity"}
    return [op for op in project(data, CTX) if isinstance(op, Add) and op.table in tables]


def spans(
    table: str, key: tuple[str, ...], row: dict[str, object], sums: tuple[str, ...]
) -> list[Add]:
    """``row`` added to the 1-, 10- and 60-minute spans that hold ``CTX.time`` (12:30:15)."""
    return [
        Add(table, ("span", "start", *key), {"span": span, "start": START[span], **row}, sums)
        for span in (1, 10, 60)
    ]


START = {
    1: datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    10: datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    60: datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC),
}


def test_a_completed_turn_adds_one_timed_turn_with_its_tokens_to_each_span() -> None:
    requested = CTX.time - datetime.timedelta(milliseconds=2500)
    data = events.TurnCompleted(
        **IDS, agent_id="agent-1", requested_at=requested, message_id="m", usage=USED, steps=2
    )

    assert activity_of(data) == [
        *spans(
            "turn_activity",
            ("tenant_id", "agent_id", "outcome", "error_code"),
            {
                "tenant_id": "tenant-a",
                "agent_id": "agent-1",
                "outcome": "completed",
                "error_code": "",
                "turns": 1,
                "latency_ms": 2500,
                "input_tokens": 120,
                "output_tokens": 30,
            },
            ("turns", "latency_ms", "input_tokens", "output_tokens"),
        ),
        *spans(
            "turn_latency",
            ("outcome", "latency_bucket"),
            {"outcome": "completed", "latency_bucket": activity.bucket(2500), "turns": 1},
            ("turns",),
        ),
    ]


def test_a_failed_turn_recorded_before_ends_said_when_they_began_is_counted_untimed() -> None:
    counted, *_, timed = activity_of(
        events.TurnFailed(**IDS, code="MODEL_UNAVAILABLE", detail="HTTP 500")
    )

    assert {k: counted.row[k] for k in ("agent_id", "outcome", "error_code", "latency_ms")} == {
        "agent_id": "",
        "outcome": "failed",
        "error_code": "MODEL_UNAVAILABLE",
        "latency_ms": 0,
    }
    assert (timed.table, timed.row["latency_bucket"]) == ("turn_latency", activity.UNTIMED)


def test_a_rejected_turn_is_counted_by_its_code_and_agent() -> None:
    data = events.TurnRejected(**IDS, code="AGENT_DISABLED", detail="off", agent_id="agent-1")

    counted = activity_of(data)[0]

    assert (counted.row["outcome"], counted.row["error_code"], counted.row["agent_id"]) == (
        "rejected",
        "AGENT_DISABLED",
        "agent-1",
    )


def test_a_failed_model_call_adds_its_latency_and_code_per_provider_and_model() -> None:
    data = events.ModelCallFailed(
        **IDS,
        call_id="c-1",
        step=1,
        code="MODEL_RATE_LIMITED",
        detail="429",
        usage=USED,
        provider="openai",
        model="gpt-4o-mini",
        requested_at=CTX.time - datetime.timedelta(milliseconds=830),
    )

    assert activity_of(data) == spans(
        "model_activity",
        ("provider", "model", "outcome", "error_code", "latency_bucket"),
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "outcome": "failed",
            "error_code": "MODEL_RATE_LIMITED",
            "latency_bucket": activity.bucket(830),
            "calls": 1,
            "latency_ms": 830,
            "input_tokens": 120,
            "cached_input_tokens": 20,
            "output_tokens": 30,
        },
        ("calls", "latency_ms", "input_tokens", "cached_input_tokens", "output_tokens"),
    )


@pytest.mark.parametrize(
    ("window", "span"), [(15, 1), (60, 1), (61, 10), (360, 10), (600, 10), (1440, 60)]
)
def test_a_window_is_read_in_the_span_that_gives_it_at_most_60_points(
    window: int, span: int
) -> None:
    assert activity.span_for(window) == span


def test_span_starts_are_aligned_to_the_hour_in_utc() -> None:
    oslo = datetime.timezone(datetime.timedelta(hours=1))
    at = datetime.datetime(2024, 5, 1, 13, 47, 59, 999_999, tzinfo=oslo)

    assert [activity.span_start(at, span) for span in (1, 10, 60)] == [
        datetime.datetime(2024, 5, 1, 12, 47, tzinfo=datetime.UTC),
        datetime.datetime(2024, 5, 1, 12, 40, tzinfo=datetime.UTC),
        datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC),
    ]


@given(st.floats(min_value=1, max_value=1e8))
def test_a_bucket_stands_for_its_latencies_within_4_5_percent(ms: float) -> None:
    assert activity.bucket_ms(activity.bucket(ms)) == pytest.approx(ms, rel=0.045)


def test_buckets_grow_with_latency_and_sub_millisecond_calls_share_the_first() -> None:
    assert activity.bucket(0) == activity.bucket(0.4) == activity.bucket(1) == 0
    assert activity.bucket(100) < activity.bucket(110) < activity.bucket(125)


def test_quantiles_read_the_bucket_where_the_rank_falls_and_skip_untimed_counts() -> None:
    histogram = [
        (activity.bucket(100), 50),
        (activity.bucket(1000), 49),
        (activity.bucket(9000), 1),
        (activity.UNTIMED, 400),
    ]

    p50, p99, top = activity.quantiles(histogram, (0.5, 0.99, 1.0))

    assert p50 == pytest.approx(100, rel=0.045)
    assert p99 == pytest.approx(1000, rel=0.045)
    assert top == pytest.approx(9000, rel=0.045)
    assert activity.quantiles([(activity.UNTIMED, 3)], (0.5,)) == [None]
    assert activity.quantiles([], (0.5, 0.99)) == [None, None]
