"""Schemas are contracts: stored events must stay readable."""

from __future__ import annotations

import copy
import datetime

import jsonschema
import pytest

from schemas import events
from schemas.envelope import EnvelopeError, envelope, from_kafka, to_kafka
from schemas.export import committed_schemas, compatibility_report, current_schemas


def test_every_event_type_has_a_committed_schema_that_matches_the_model() -> None:
    committed = committed_schemas()
    current = current_schemas()
    assert sorted(committed) == sorted(current), "run: python -m schemas.export"
    assert committed == current, "run: python -m schemas.export"


def test_current_models_can_read_every_committed_schema() -> None:
    assert compatibility_report(committed_schemas(), current_schemas()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda s: (
                s["required"].append("priority")
                or s["properties"].update(priority={"type": "integer"})
            ),
            "priority: newly required",
        ),
        (lambda s: s["properties"]["message"].update(type="integer"), "message: type changed"),
        (None, "removed"),
    ],
)
def test_breaking_changes_are_caught(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    type_ = events.TurnRequested.ce_type()
    committed = {type_: committed_schemas()[type_]}
    current = copy.deepcopy(committed)
    if mutate is None:
        current.clear()
    else:
        mutate(current[type_])
    report = compatibility_report(committed, current)
    assert any(expected in line for line in report), report


def test_an_added_optional_field_is_compatible() -> None:
    type_ = events.TurnRequested.ce_type()
    committed = {type_: committed_schemas()[type_]}
    current = copy.deepcopy(committed)
    current[type_]["properties"]["note"] = {"type": "string", "default": ""}
    assert compatibility_report(committed, current) == []


def test_kafka_binary_mode_round_trip_is_valid_against_the_schema() -> None:
    data = events.TurnRequested(session_id="s-1", turn_id="t-1", message="hello")
    env = envelope(data, source="/test", tenant_id="tenant-1")
    key, value, headers = to_kafka(env)
    header_map = dict(headers)
    assert key == b"s-1"
    assert header_map["ce_type"] == b"agentlog.turn.requested.v1"
    assert header_map["ce_partitionkey"] == b"s-1"
    assert header_map["ce_traceparent"].startswith(b"00-")
    back = from_kafka(key, value, headers)
    assert back.data == data
    assert back.id == env.id
    assert back.time == env.time.replace(tzinfo=datetime.UTC)
    import json

    jsonschema.validate(json.loads(value), committed_schemas()[data.ce_type()])


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "no ce_type"),
        (
            [
                ("ce_type", b"agentlog.nope.v1"),
                ("ce_id", b"1"),
                ("ce_source", b"/x"),
                ("ce_specversion", b"1.0"),
            ],
            "missing CloudEvents attributes",
        ),
    ],
)
def test_unreadable_records_raise_envelope_errors(
    headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        from_kafka(b"k", b"{}", headers)
