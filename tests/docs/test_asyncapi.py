"""docs/asyncapi.yaml is what FastStream generates from the roles, and it is whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.models import json_references
from schemas import events
from schemas.base import Fact
from schemas.envelope import envelope, to_kafka
from streams.catalog import SPECS
from streams.dead_letters import DEAD_LETTER_HEADERS
from workers.asyncapi import document

FILE = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"


def test_the_file_is_what_the_roles_generate() -> None:
    assert FILE.read_text() == document(), (
        "docs/asyncapi.yaml is out of date: python -m workers.asyncapi > docs/asyncapi.yaml"
    )


def test_every_topic_fact_and_reference_is_in_the_document() -> None:
    spec = yaml.safe_load(document())
    addresses = {channel["address"] for channel in spec["channels"].values()}
    assert addresses == {topic.name for topic in SPECS}
    schemas = spec["components"]["schemas"]
    assert {fact.__name__ for fact in Fact.registry.values()} <= set(schemas)
    for ref in json_references(spec):
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # a reference that does not resolve raises here
    received = {
        op["channel"]["$ref"] for op in spec["operations"].values() if op["action"] == "receive"
    }
    assert {"#/channels/commands", "#/channels/orchestrator", "#/channels/tool"} <= received


def test_the_documented_headers_are_those_records_carry() -> None:
    spec = yaml.safe_load(document())
    schemas = spec["components"]["schemas"]
    fact = events.TurnRequested(session_id="s-1", turn_id="t-1", message="hi")
    _key, _value, headers = to_kafka(envelope(fact, source="/tests", tenant_id="t"))
    assert set(schemas["CloudEventHeaders"]["properties"]) == {name for name, _ in headers}
    assert set(schemas["DeadLetterHeaders"]["properties"]) == set(DEAD_LETTER_HEADERS)
    for name, message in spec["components"]["messages"].items():
        dead = name.startswith("agentlog.deadletter")
        assert message["headers"]["$ref"].endswith(
            "DeadLetterHeaders" if dead else "CloudEventHeaders"
        )
        if not dead:
            assert message["correlationId"]["location"] == "$message.header#/ce_correlationid"
