"""Parsing what models stream, and mapping provider HTTP errors."""

from __future__ import annotations

import pytest

from workers.providers.base import UNPARSED_ARGUMENTS, error_for_status, parse_arguments


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ('{"city": "Oslo"}', {"city": "Oslo"}),
        ("", {}),
        ("  ", {}),
        ('{"city": "Os', {UNPARSED_ARGUMENTS: '{"city": "Os'}),
        ("[1, 2]", {UNPARSED_ARGUMENTS: "[1, 2]"}),
    ],
)
def test_tool_arguments_are_an_object_or_kept_unparsed(raw: str, parsed: dict[str, object]) -> None:
    assert parse_arguments(raw) == parsed


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("Wed, 21 Oct 2026 07:28:00 GMT", None), (None, None)],
)
def test_retry_after_in_seconds_is_honoured(retry_after: str | None, seconds: float | None) -> None:
    assert error_for_status(429, "slow down", retry_after).retry_after == seconds


def test_an_overloaded_provider_may_be_retried() -> None:
    error = error_for_status(529, "overloaded", None)
    assert (error.code, error.retryable) == ("MODEL_UNAVAILABLE", True)
