"""The tracing helpers: when export is on, and reading and writing ``traceparent``."""

from __future__ import annotations

import pytest

from streams.tracing import context_of, export_configured, sampled, span_id_for, with_span_id

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),  # compose's default: off
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_spans_are_exported_only_when_an_endpoint_is_set(environ: dict[str, str], on: bool) -> None:
    assert export_configured(environ) is on


def test_a_w3c_traceparent_is_read_and_anything_else_starts_a_new_trace() -> None:
    assert context_of(PARENT) is not None
    for foreign in ("", "garbage", "00-xyz-abc-01", f"00-{'0' * 32}-b7ad6b7169203331-01"):
        assert context_of(foreign) is None
    assert sampled(PARENT)
    assert not sampled(PARENT[:-2] + "00")


def test_a_turn_span_id_is_fixed_by_its_key_and_named_in_the_same_trace() -> None:
    span_id = span_id_for("turn/t-1")
    assert span_id == span_id_for("turn/t-1") != span_id_for("turn/t-2")
    named = with_span_id(PARENT, span_id)
    assert named.split("-")[1] == PARENT.split("-")[1]
    assert named.split("-")[2] == f"{span_id:016x}"
    assert with_span_id("garbage", span_id) == "garbage"
