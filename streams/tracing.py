"""Tracing with OpenTelemetry: one turn is one trace, from the HTTP request down.

Export is OTLP over HTTP, configured by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, headers,
timeouts, ``OTEL_BSP_*`` for batching, ``OTEL_SERVICE_NAME``). With no endpoint, or
``OTEL_SDK_DISABLED=true``, or ``OTEL_TRACES_EXPORTER=none``, tracing is off and
``enabled()`` is false: callers then make no span at all, so the hot path pays nothing.

The trace travels in each record's ``traceparent`` (the CloudEvents extension, W3C trace
context): a producer writes its ``send`` span's context there, and a consumer's
``process`` span continues it (``streams.consumer`` and ``streams.publisher``; the
messaging conventions). Every span in between (a model call, a tool call) is a child of
the ``process`` span of the record that asked for it: the runtime hands a handler each
record with the ``traceparent`` of that span.

A trace starts at our edge. The gateway never continues a client's ``traceparent``: a
client would choose the trace ids the log and the ledger keep, and could have a trace
recorded whatever the sampler says. Its request span is a new root, sampled by our
sampler, with a link to the client's context (``EdgeTraceContext``, ``link_client``).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_fixed_span_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "agentlog_fixed_span_id", default=None
)
_provider: TracerProvider | None = None
tracer = trace.get_tracer("agentlog")


class _Ids(RandomIdGenerator):
    """Random ids, except a span id fixed beforehand (``fixed_span_id``): a span whose
    children were made before it, in other processes (a turn's)."""

    def generate_span_id(self) -> int:
        fixed = _fixed_span_id.get()
        return super().generate_span_id() if fixed is None else fixed


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask for spans to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def configure(service: str) -> bool:
    """Export this process's spans over OTLP/HTTP if the environment asks for it, as
    ``service`` unless ``OTEL_SERVICE_NAME`` names it; True if tracing is on. Called once
    per process, by its entry point; later calls change nothing."""
    global _provider
    if _provider is not None:
        return True
    if not export_configured():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(named), id_generator=_Ids())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(EdgeTraceContext())
    # The exporter encodes batches in a thread of its own, in Python: with the default
    # 5 ms switch interval, the event loop waits up to 5 ms for the GIL at each wake-up
    # during an export, on every hop of a turn.
    sys.setswitchinterval(0.0005)
    _provider = provider
    return True


def enabled() -> bool:
    return _provider is not None


_W3C = TraceContextTextMapPropagator()
_CLIENT = otel_context.create_key("agentlog-client-trace")


class EdgeTraceContext(TextMapPropagator):
    """W3C trace context, read as the edge of our traces: what a carrier (an HTTP
    request's headers, read by the gateway's instrumentation) names is kept apart, for
    ``link_client``, never made the parent. So the request's span is a root: its trace
    id is ours, and our sampler decides whether it is recorded. Baggage and
    ``tracestate`` from outside are dropped. Written contexts (``inject``) are W3C's."""

    def extract(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> otel_context.Context:
        theirs = trace.get_current_span(_W3C.extract(carrier, getter=getter)).get_span_context()
        ours = otel_context.Context() if context is None else context
        if not theirs.is_valid:
            return ours
        kept = SpanContext(theirs.trace_id, theirs.span_id, True, theirs.trace_flags)
        return otel_context.set_value(_CLIENT, kept, ours)

    def inject(
        self,
        carrier: CarrierT,
        context: otel_context.Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        _W3C.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return _W3C.fields


def client_context(context: otel_context.Context | None = None) -> SpanContext | None:
    """The context a client sent with the request being served, if any."""
    found = otel_context.get_value(_CLIENT, context)
    return found if isinstance(found, SpanContext) else None


def link_client(span: Span, scope: Mapping[str, Any]) -> None:
    """Link the request's span to the client's context (the instrumentation's
    ``server_request_hook``): its trace can still be found from theirs."""
    theirs = client_context()
    if theirs is not None:
        span.add_link(theirs, {"agentlog.link": "client"})


def context_of(traceparent: str) -> otel_context.Context | None:
    """The context a ``traceparent`` names, to start a child span in; None if it is not a
    valid W3C ``traceparent`` (the span then starts a trace of its own)."""
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def sampled(traceparent: str) -> bool:
    """Whether the trace is recorded (the sampled flag): an unsampled one gets no span
    at all below its root, so the records of a trace the sampler dropped cost nothing."""
    return traceparent[-1:] in _ODD_HEX


_ODD_HEX = frozenset("13579bdf")


def traceparent_of(span: Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def span_id_for(key: str) -> int:
    """A span id that ``key`` always gives: for a span whose children are made first."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") or 1


def with_span_id(traceparent: str, span_id: int) -> str:
    """``traceparent`` in the same trace, naming the span ``span_id`` as the parent (a
    ``traceparent`` that is not W3C's, from a foreign producer, as it is)."""
    parts = traceparent.split("-")
    if context_of(traceparent) is None:
        return traceparent
    return f"{parts[0]}-{parts[1]}-{span_id:016x}-{parts[3]}"


def start(
    name: str,
    traceparent: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
    span_id: int | None = None,
) -> Span:
    """A span, child of the one ``traceparent`` names; the caller ends it. ``span_id``
    fixes its id (see ``span_id_for``)."""
    token = _fixed_span_id.set(span_id)
    try:
        return tracer.start_span(
            name,
            context=context_of(traceparent),
            kind=kind,
            attributes=attributes,
            start_time=start_time,
        )
    finally:
        _fixed_span_id.reset(token)


@contextlib.contextmanager
def span(
    name: str,
    traceparent: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """A span around the block, child of ``traceparent``, the current span inside it;
    None when tracing is off. An exception out of the block is recorded on it."""
    if _provider is None:
        yield None
        return
    current = start(name, traceparent, kind=kind, attributes=attributes)
    with trace.use_span(current, end_on_exit=True):
        yield current


def messaging(
    operation: str,
    topic: str,
    message_id: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """The messaging conventions' attributes of a ``send`` or ``process`` span."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        "messaging.message.id": message_id,
    }
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
    return attributes


@contextlib.contextmanager
def processing(items: list[Any], group: str) -> Iterator[list[Any]]:
    """A ``process`` span per record of a batch, around the block: each continues the
    record's trace, and the block gets the items again with each envelope's
    ``traceparent`` naming its record's span, so what handling it causes is that span's
    child. Items are ``(envelope, position)``; with tracing off they pass unchanged."""
    if _provider is None:
        yield items
        return
    spans: list[Span] = []
    traced = []
    for env, position in items:
        if not sampled(env.traceparent):
            traced.append((env, position))
            continue
        current = start(
            f"process {position.topic}",
            env.traceparent,
            kind=SpanKind.CONSUMER,
            attributes=messaging(
                "process",
                position.topic,
                env.id,
                partition=position.partition,
                offset=position.offset,
                group=group,
            ),
        )
        spans.append(current)
        traced.append((replace(env, traceparent=traceparent_of(current)), position))
    try:
        yield traced
    except BaseException as exc:
        for current in spans:
            failed(current, type(exc).__name__)
        raise
    finally:
        for current in spans:
            current.end()


def failed(span: Span | None, error_type: str, description: str = "") -> None:
    """Mark ``span`` as failed with ``error.type`` (a code, never a tenant's data)."""
    if span is None:
        return
    span.set_attribute("error.type", error_type)
    span.set_status(trace.Status(trace.StatusCode.ERROR, description or error_type))
