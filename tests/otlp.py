"""A real OTLP/HTTP trace receiver for tests and benchmarks: it takes what the
exporters POST to ``/v1/traces`` (protobuf), decodes it with ``opentelemetry-proto``,
and keeps the spans with the ``service.name`` of the process that sent them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tests.eventually import eventually


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    error: bool
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id) of each

    @property
    def kind_name(self) -> str:
        name: str = ProtoSpan.SpanKind.Name(self.kind)
        return name.removeprefix("SPAN_KIND_").lower()


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    return None if field is None else getattr(value, field)


class OtlpReceiver:
    """``endpoint`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` should be set to."""

    def __init__(self, *, decode: bool = True) -> None:
        """``decode=False``: count requests and bytes only, as a collector would cost
        next to nothing (benchmarks)."""
        self.spans: list[Span] = []
        self.requests = 0
        self.bytes = 0
        self._decode = decode
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if receiver._decode:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver._take(request)
                else:
                    with receiver._lock:
                        receiver.requests += 1
                        receiver.bytes += len(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, request: ExportTraceServiceRequest) -> None:
        taken = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    taken.append(
                        Span(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            error=span.status.code == span.status.STATUS_CODE_ERROR,
                            links=tuple((k.trace_id.hex(), k.span_id.hex()) for k in span.links),
                        )
                    )
        with self._lock:
            self.spans.extend(taken)
            self.requests += 1

    def wait_for(self, predicate: Callable[[list[Span]], bool], timeout: float = 30) -> list[Span]:
        """The spans received, once ``predicate`` holds for them."""

        def received() -> tuple[list[Span]]:
            with self._lock:
                spans = list(self.spans)
            assert predicate(spans), f"spans ({len(spans)}): {sorted({s.name for s in spans})}"
            return (spans,)  # truthy even with no span

        (spans,) = eventually(received, "the spans wanted", timeout=timeout)
        return spans
