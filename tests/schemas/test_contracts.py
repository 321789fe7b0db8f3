"""Schemas are contracts: stored events must stay readable."""

from __future__ import annotations

import copy
import datetime
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import events
from schemas.base import Fact
from schemas.compat import CommittedVersion, Schema, compatibility_report, history_report
from schemas.envelope import EnvelopeError, envelope, from_kafka, to_kafka, to_kafka_with_sdk
from schemas.export import committed_schemas, current_schemas
from schemas.history import GitUnavailable, git_history
from tests.projections.strategies import facts_in_context

TURN_REQUESTED = events.TurnRequested.ce_type()


def this_repositorys_history() -> list[CommittedVersion]:
    """Every committed version of this repository's schemas; a skip only without git."""
    try:
        versions = git_history()
    except GitUnavailable as exc:
        pytest.skip(f"the schemas' git history is not available: {exc}")
    assert versions, "schemas/json has no committed version: is it tracked?"
    return versions


def test_every_event_type_has_a_committed_schema_that_matches_the_model() -> None:
    committed = committed_schemas()
    current = current_schemas()
    assert sorted(committed) == sorted(current), "run: python -m schemas.export"
    assert committed == current, "run: python -m schemas.export"


def test_current_models_can_read_every_committed_schema() -> None:
    assert compatibility_report(committed_schemas(), current_schemas()) == []


def test_current_models_can_read_every_schema_version_in_git_history() -> None:
    versions = this_repositorys_history()
    assert {v.type_ for v in versions} >= {TURN_REQUESTED}
    assert [str(p) for p in history_report(versions, current_schemas())] == []


def test_the_export_check_passes_on_this_tree() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "schemas.export", "--check"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def _drop_field(s: Schema, name: str) -> None:
    del s["properties"][name]
    if name in s["required"]:
        s["required"].remove(name)


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
        (lambda s: s["properties"]["message"].update(type="integer"), "message: narrowed"),
        (lambda s: _drop_field(s, "message"), "message: removed field"),
        (lambda s: s["properties"]["mode"].update(enum=["chat"]), "mode: removed enum value"),
        (lambda s: s["properties"]["message"].update(maxLength=10), "message: narrowed"),
        (None, "removed type"),
    ],
    ids=["required", "narrowed", "removed field", "removed value", "maxLength", "removed type"],
)
def test_breaking_changes_are_caught(
    mutate: Callable[[Schema], object] | None, expected: str
) -> None:
    committed = {TURN_REQUESTED: committed_schemas()[TURN_REQUESTED]}
    current = copy.deepcopy(committed)
    if mutate is None:
        current.clear()
    else:
        mutate(current[TURN_REQUESTED])
    report = [str(p) for p in compatibility_report(committed, current)]
    assert any(expected in line for line in report), report


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["properties"].update(note={"type": "string", "default": ""}),
        lambda s: s["properties"]["mode"]["enum"].append("batch"),
        lambda s: s["properties"].update(
            message={"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
        ),
        lambda s: s["required"].remove("message"),
    ],
    ids=["added optional field", "added enum value", "nullable", "no longer required"],
)
def test_an_added_optional_field_and_widening_are_compatible(
    mutate: Callable[[Schema], object],
) -> None:
    committed = {TURN_REQUESTED: committed_schemas()[TURN_REQUESTED]}
    current = copy.deepcopy(committed)
    mutate(current[TURN_REQUESTED])
    assert compatibility_report(committed, current) == []


def test_a_re_exported_narrowed_schema_is_caught_by_this_repositorys_history() -> None:
    """As if the file had been deleted and re-exported: the working tree then agrees with
    the models, and only git still knows what stored events look like."""
    narrowed = current_schemas()[TURN_REQUESTED]
    narrowed["properties"]["mode"]["enum"] = ["chat"]
    current = {TURN_REQUESTED: narrowed}
    assert compatibility_report(current, current) == []  # the re-exported working tree
    versions = [v for v in this_repositorys_history() if v.type_ == TURN_REQUESTED]
    problems = history_report(versions, current)
    assert [(p.type_, p.kind, p.path) for p in problems] == [
        (TURN_REQUESTED, "removed enum value", "mode")
    ]


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


@settings(max_examples=200, deadline=None)
@given(facts_in_context())
def test_reading_a_record_agrees_with_the_cloudevents_sdk(example: tuple[Fact, Any]) -> None:
    """``from_kafka`` reads binary mode itself (the hot path); the SDK's reader of the
    same record gives the same attributes and the same data."""
    fact, ctx = example
    env = envelope(fact, source="/test", tenant_id=ctx.tenant_id)
    key, value, headers = to_kafka(env)
    ours = from_kafka(key, value, headers)
    sdk = ce_kafka.from_binary_event(ce_kafka.KafkaMessage(dict(headers), key, value))
    attrs = sdk.get_attributes()
    assert ours.data == type(fact).model_validate(sdk.get_data()) == fact
    assert (ours.id, ours.source, ours.type, ours.subject) == (
        attrs["id"],
        attrs["source"],
        attrs["type"],
        attrs["subject"],
    )
    assert (ours.tenant_id, ours.causation_id, ours.correlation_id, ours.traceparent) == (
        attrs["tenantid"],
        attrs["causationid"],
        attrs["correlationid"],
        attrs["traceparent"],
    )
    assert (ours.time, ours.sequence) == (attrs["time"], int(attrs["sequence"]))


@pytest.mark.parametrize("rename", [str.upper, str.title])
def test_header_names_are_read_whatever_their_case(rename: Callable[[str], str]) -> None:
    """Another producer may write ``CE_ID`` or ``Content-Type``: the binding's header
    names are case-insensitive, as the SDK's reader has them; other headers are not
    attributes."""
    env = envelope(
        events.TenantCreated(tenant_id="tenant-a", display_name="A"),
        source="/t",
        tenant_id="tenant-a",
    )
    key, value, headers = to_kafka(env)
    renamed = [(rename(name), raw) for name, raw in headers] + [("x-other", b"not ours")]
    assert from_kafka(key, value, renamed) == from_kafka(key, value, headers)
    sdk = ce_kafka.from_binary_event(ce_kafka.KafkaMessage(dict(renamed), key, value))
    assert from_kafka(key, value, renamed).id == sdk.get_attributes()["id"]


@settings(max_examples=200, deadline=None)
@given(facts_in_context(), st.booleans())
def test_writing_a_record_agrees_with_the_cloudevents_sdk(
    example: tuple[Fact, Any], whole_second: bool
) -> None:
    """``to_kafka`` writes binary mode itself (the hot path); the SDK's Kafka binding
    writes the same key and headers, byte for byte, and the same JSON data."""
    fact, ctx = example
    env = envelope(fact, source="/test", tenant_id=ctx.tenant_id)
    if whole_second:  # a time with no fraction is written without one
        env = env.at(env.time.replace(microsecond=0))
    key, value, headers = to_kafka(env)
    sdk_key, sdk_value, sdk_headers = to_kafka_with_sdk(env)
    assert (key, headers) == (sdk_key, sdk_headers)
    assert json.loads(value) == json.loads(sdk_value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h: [(k, b"\xff" if k == "ce_id" else v) for k, v in h], "UnicodeDecodeError"),
        (lambda h: [(k, b"0.3" if k == "ce_specversion" else v) for k, v in h], "specversion"),
        (lambda h: [(k, b"yesterday" if k == "ce_time" else v) for k, v in h], "not a timestamp"),
        (lambda h: [(k, b"text/plain" if k == "content-type" else v) for k, v in h], "not JSON"),
        (lambda h: [(k, v) for k, v in h if k != "ce_tenantid"], "missing.*tenantid"),
    ],
    ids=["not utf-8", "another spec version", "no time", "not json", "no tenant"],
)
def test_a_damaged_record_is_refused_with_its_reason(
    change: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]], reason: str
) -> None:
    env = envelope(
        events.TurnRequested(session_id="s-1", turn_id="t-1", message="hi"),
        source="/test",
        tenant_id="tenant-1",
    )
    key, value, headers = to_kafka(env)
    with pytest.raises(EnvelopeError, match=reason):
        from_kafka(key, value, change(headers))
    with pytest.raises(EnvelopeError, match=r"invalid agentlog\.turn\.requested\.v1"):
        from_kafka(key, b'{"session_id": 1}', headers)
