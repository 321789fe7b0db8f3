"""What billing counts: ``unbillable`` at and beyond every bound it sets."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from schemas.usage import MAX_COUNTER, MAX_QUANTITY, MAX_TEXT_BYTES, UsageRecorded, unbillable

UTC = datetime.UTC
NOON = datetime.datetime(2026, 11, 5, 12, tzinfo=UTC)


def usage(**changes: Any) -> UsageRecorded:
    values: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "kind": "model",
        "resource": "openai:gpt-test",
        "quantities": {"input_tokens": 10, "output_tokens": 2},
        "used_at": NOON,
    }
    return UsageRecorded.model_validate({**values, **changes})


# Two bytes a character in UTF-8: a bound in characters would let twice as much through.
WIDE = "\u00e9"


@pytest.mark.parametrize(
    "changes",
    [
        {"quantities": {"input_tokens": MAX_QUANTITY}},
        {"quantities": {"calls": MAX_QUANTITY, "bytes": MAX_QUANTITY}},
        {"resource": "r" * MAX_TEXT_BYTES},
        {"agent_id": WIDE * (MAX_TEXT_BYTES // 2)},
        {"agent_version": MAX_COUNTER, "step": MAX_COUNTER},
        {"used_at": datetime.datetime(1970, 1, 1, tzinfo=UTC)},
        {"used_at": datetime.datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
    ],
)
def test_usage_at_every_bound_is_counted(changes: dict[str, Any]) -> None:
    assert unbillable(usage(**changes)) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"quantities": {"input_tokens": MAX_QUANTITY + 1}}, "input_tokens is above"),
        ({"quantities": {"calls": 1, "bytes": 2**64}}, "bytes is above"),
        ({"quantities": {"output_tokens": 10**400}}, "output_tokens is above"),
        ({"resource": "r" * (MAX_TEXT_BYTES + 1)}, "resource is longer"),
        ({"agent_id": WIDE * (MAX_TEXT_BYTES // 2 + 1)}, "agent_id is longer"),
        ({"tenant_id": "t" * 10_000}, "tenant_id is longer"),
        ({"trace_id": "\ud800"}, "trace_id holds a lone surrogate"),
        ({"resource": "gpt\x00"}, "resource holds a NUL"),
        ({"agent_version": MAX_COUNTER + 1}, "agent_version and step"),
        ({"step": 2**63}, "agent_version and step"),
        ({"used_at": datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)}, "used_at"),
        ({"used_at": datetime.datetime(9999, 1, 1, tzinfo=UTC)}, "used_at"),
        # Neither can be written in UTC at all: converting them overflows.
        ({"used_at": "0001-01-01T00:00:00+05:00"}, "used_at"),
        ({"used_at": "9999-12-31T23:00:00-05:00"}, "used_at"),
    ],
)
def test_usage_beyond_a_bound_is_refused_with_its_reason(
    changes: dict[str, Any], reason: str
) -> None:
    found = unbillable(usage(**changes))
    assert found is not None
    assert found.startswith(reason), found
