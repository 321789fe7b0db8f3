"""The tracing helpers: when export is on, reading and writing ``traceparent``, and the
edge, where a client's trace context is linked and never continued."""

from __future__ import annotations

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from streams.tracing import (
    EdgeTraceContext,
    context_of,
    export_configured,
    link_client,
    sampled,
    span_id_for,
    with_span_id,
)

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


def _served(sampler: Sampler, headers: dict[str, str]) -> ReadableSpan | None:
    """The span of a request with ``headers``, made as the gateway's instrumentation
    makes it (the global propagator's context, then its request hook); None if the
    sampler dropped it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context = EdgeTraceContext().extract(headers)
    token = otel_context.attach(context)
    try:
        span = provider.get_tracer("t").start_span("POST /v1/x", context, kind=SpanKind.SERVER)
        link_client(span, {})
        span.end()
    finally:
        otel_context.detach(token)
    finished = exporter.get_finished_spans()
    return finished[0] if finished else None


@pytest.mark.parametrize(
    "client",
    [PARENT, "00-" + "f" * 32 + "-" + "e" * 16 + "-01", "00-" + "1" * 32 + "-" + "2" * 16 + "-00"],
)
def test_a_clients_traceparent_is_linked_and_never_the_parent(client: str) -> None:
    served = _served(ParentBased(ALWAYS_ON), {"traceparent": client, "tracestate": "k=v"})

    assert served is not None
    assert served.context is not None
    assert served.parent is None  # a root of ours
    assert f"{served.context.trace_id:032x}" != client.split("-")[1]
    [link] = served.links
    assert f"{link.context.trace_id:032x}-{link.context.span_id:016x}" == "-".join(
        client.split("-")[1:3]
    )
    assert link.context.trace_state.get("k") is None  # tracestate is not kept


@pytest.mark.parametrize("client", ["", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"])
def test_a_request_without_a_valid_traceparent_gets_a_root_and_no_link(client: str) -> None:
    served = _served(ParentBased(ALWAYS_ON), {"traceparent": client} if client else {})

    assert served is not None
    assert served.parent is None
    assert not served.links


def test_a_client_cannot_have_a_trace_recorded_that_the_sampler_drops() -> None:
    assert _served(ParentBased(TraceIdRatioBased(0)), {"traceparent": PARENT}) is None


def test_a_clients_baggage_is_not_taken() -> None:
    context = EdgeTraceContext().extract({"traceparent": PARENT, "baggage": "tenant=other"})
    assert baggage.get_all(context) == {}
