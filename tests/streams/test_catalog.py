"""The catalog routes every fact class by its table (``TOPICS``), never by its module."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from schemas import billing, events
from schemas.base import Fact
from streams.catalog import (
    BILLING,
    EVENTS,
    TOPICS,
    Catalog,
    TopicSpec,
    UnroutableFactError,
    facts_on,
    spec_for,
)


def table_problems(table: Mapping[type, TopicSpec]) -> list[str]:
    """Registered fact classes the table gives no topic, and entries that are not one."""
    registered = set(Fact.registry.values())
    return [f"{c.__name__}: no topic" for c in Fact.registry.values() if c not in table] + [
        f"{c.__name__}: not a registered fact" for c in table if c not in registered
    ]


def test_every_registered_fact_class_has_a_topic_and_every_entry_is_one() -> None:
    assert table_problems(TOPICS) == []


@pytest.fixture
def unlisted() -> Iterator[type[Fact]]:
    """A fact class defined beside the events topic's classes, in no table."""

    class ToolCallRetried(events._ToolCallFact):
        """``agentlog.tool_call.retried.v1``: for this test only."""

        name = "retried"

    try:
        yield ToolCallRetried
    finally:
        del Fact.registry[ToolCallRetried.ce_type()]


def test_a_fact_class_without_a_topic_fails_the_check_and_is_not_routed(
    unlisted: type[Fact],
) -> None:
    assert table_problems(TOPICS) == ["ToolCallRetried: no topic"]
    with pytest.raises(UnroutableFactError, match="ToolCallRetried"):
        spec_for(unlisted)
    with pytest.raises(UnroutableFactError):
        Catalog("p.").topic_for(unlisted)
    assert unlisted not in facts_on("p.agentlog.events")


def test_an_entry_that_is_not_a_fact_fails_the_check() -> None:
    table: dict[type, TopicSpec] = {**TOPICS, events._TurnFact: EVENTS, events.UsageValue: EVENTS}
    assert table_problems(table) == [
        "_TurnFact: not a registered fact",
        "UsageValue: not a registered fact",
    ]


def test_a_class_is_routed_by_the_table_not_by_its_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-drives are defined with the billing facts; moving one beside the events
    topic's classes leaves it on the billing topic."""
    monkeypatch.setattr(billing.DeadLetterRedriveRequested, "__module__", events.__name__)
    assert spec_for(billing.DeadLetterRedriveRequested) is BILLING


def test_facts_on_a_topic_are_its_table_entries_in_order_of_definition() -> None:
    on_billing = facts_on("deployment-a.agentlog.billing")
    assert set(on_billing) == {fact for fact, spec in TOPICS.items() if spec is BILLING}
    registry_order = list(Fact.registry.values())
    assert on_billing == sorted(on_billing, key=registry_order.index)


def test_a_request_for_an_effect_worker_is_written_on_its_topic_and_its_work_topic() -> None:
    catalog = Catalog("deployment-a.")
    for request, work in (
        (events.ModelCallRequested, "deployment-a.agentlog.model-calls"),
        (events.ToolCallRequested, "deployment-a.agentlog.tool-calls"),
    ):
        assert catalog.topics_for(request) == (catalog.events, work)
        assert catalog.work_topic(request) == work
        assert facts_on(work) == [request]
    assert catalog.topics_for(events.ModelCallCompleted) == (catalog.events,)
