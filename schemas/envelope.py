"""CloudEvents 1.0 envelopes, in Kafka binary content mode.

``ce_*`` headers carry the attributes, the value is the JSON data, and the Kafka key is
the ``partitionkey`` extension (the aggregate id). Writing and reading, every producer's
and consumer's hot path, are done here to the rules of the CloudEvents SDK's Kafka
binding, which the conformance tests compare them with.
"""

from __future__ import annotations

import datetime
import os
import uuid
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from opentelemetry import trace
from pydantic import ValidationError

from .base import Fact, fact_class

F = TypeVar("F", bound=Fact)

_ID_NAMESPACE = uuid.UUID("6f1c2f4e-5a0b-4c55-9a51-0e3b7d1f8a21")
_CONTENT_TYPE = "application/json"


class EnvelopeError(ValueError):
    """A record that is not a readable agentlog CloudEvent (it goes to the dead-letter topic)."""


class TenantMismatchError(ValueError):
    """A fact naming one tenant in its data and another in its envelope: whose it is
    would depend on who reads it, so it is neither written nor read."""


def derived_id(causation_id: str, step: str) -> str:
    """A deterministic event id: the same cause and step always give the same id, so a
    retried write is recognisably the same event."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{causation_id}/{step}"))


def new_id() -> str:
    return str(uuid.uuid4())


def new_traceparent() -> str:
    """The context of the span being served (an HTTP request's, when tracing is on), or
    else of a new trace."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


@dataclass(frozen=True)
class Envelope(Generic[F]):
    id: str
    source: str
    data: F
    tenant_id: str
    causation_id: str
    correlation_id: str
    sequence: int
    traceparent: str
    time: datetime.datetime

    def __post_init__(self) -> None:
        # From the fields, not getattr: pydantic answers a missing attribute by raising
        # inside, which cost every record decoded 2.5 µs.
        named = self.data.__dict__.get("tenant_id", self.tenant_id)
        if named != self.tenant_id:
            raise TenantMismatchError("the data's tenant_id is not the record's tenantid")

    @property
    def type(self) -> str:
        return self.data.ce_type()

    @property
    def subject(self) -> str:
        return self.data.subject

    def follow(
        self, data: Fact, *, step: str, source: str, sequence: int | None = None
    ) -> Envelope[Any]:
        """The envelope of an event caused by this one: derived id, same correlation and
        trace, this event as its cause."""
        return Envelope(
            id=derived_id(self.id, step),
            source=source,
            data=data,
            tenant_id=self.tenant_id,
            causation_id=self.id,
            correlation_id=self.correlation_id,
            sequence=self.sequence + 1 if sequence is None else sequence,
            traceparent=self.traceparent,
            time=datetime.datetime.now(datetime.UTC),
        )

    def at(self, time: datetime.datetime) -> Envelope[F]:
        return replace(self, time=time)


def envelope(
    data: F,
    *,
    source: str,
    tenant_id: str,
    id: str | None = None,
    causation_id: str | None = None,
    correlation_id: str | None = None,
    sequence: int = 0,
    traceparent: str | None = None,
) -> Envelope[F]:
    """The envelope of an event with no cause in the log (a request from outside)."""
    event_id = id or new_id()
    return Envelope(
        id=event_id,
        source=source,
        data=data,
        tenant_id=tenant_id,
        causation_id=causation_id or event_id,
        correlation_id=correlation_id or event_id,
        sequence=sequence,
        traceparent=traceparent or new_traceparent(),
        time=datetime.datetime.now(datetime.UTC),
    )


def to_kafka(env: Envelope[Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) in CloudEvents Kafka binary mode: every attribute a ``ce_``
    header (the data content type is ``content-type``), the data as JSON, the
    ``partitionkey`` extension as the key.

    Written here directly, as the CloudEvents Kafka binding writes it: this is every
    producer's hot path, and the SDK's writer (an event object, a dict of the data, then
    ``json.dumps``) cost four times as much. ``to_kafka_with_sdk`` is that writer;
    ``tests/schemas/test_contracts.py`` holds the two to the same headers and data."""
    subject = env.data.subject.encode()
    time = env.time.isoformat()
    if time.endswith("+00:00"):
        time = time[:-6] + "Z"
    headers = [
        ("ce_id", env.id.encode()),
        ("ce_source", env.source.encode()),
        ("ce_type", env.data.ce_type().encode()),
        ("ce_specversion", b"1.0"),
        ("ce_subject", subject),
        ("ce_time", time.encode()),
        ("content-type", _CONTENT_TYPE.encode()),
        ("ce_dataschema", env.data.dataschema().encode()),
        ("ce_tenantid", env.tenant_id.encode()),
        ("ce_causationid", env.causation_id.encode()),
        ("ce_correlationid", env.correlation_id.encode()),
        ("ce_sequence", str(env.sequence).encode()),
        ("ce_traceparent", env.traceparent.encode()),
        ("ce_partitionkey", subject),
    ]
    return subject, env.data.model_dump_json().encode(), headers


def to_kafka_with_sdk(env: Envelope[Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``to_kafka`` through the CloudEvents SDK's Kafka binding: the reference the
    conformance tests hold ``to_kafka`` to."""
    event = CloudEvent(
        attributes={
            "id": env.id,
            "source": env.source,
            "type": env.type,
            "specversion": "1.0",
            "subject": env.subject,
            "time": env.time,
            "datacontenttype": _CONTENT_TYPE,
            "dataschema": env.data.dataschema(),
            "tenantid": env.tenant_id,
            "causationid": env.causation_id,
            "correlationid": env.correlation_id,
            "sequence": str(env.sequence),
            "traceparent": env.traceparent,
            "partitionkey": env.subject,
        },
        data=env.data.model_dump(mode="json"),
    )
    message = ce_kafka.to_binary_event(event)
    key = message.key.encode() if isinstance(message.key, str) else message.key or b""
    return key, message.value, list(message.headers.items())


_REQUIRED = (
    "id",
    "source",
    "type",
    "subject",
    "time",
    "tenantid",
    "causationid",
    "correlationid",
    "sequence",
    "traceparent",
)


def _attribute(header: str) -> str | None:
    """The CloudEvents attribute a Kafka header carries, or None: ``ce_`` headers (the
    binding's names are case-insensitive) and ``content-type``."""
    lower = header.lower()
    if lower.startswith("ce_"):
        return lower[3:]
    return "datacontenttype" if lower == "content-type" else None


# The headers ``to_kafka`` writes, looked up rather than worked out on the hot path.
_ATTRIBUTES: dict[str, str] = {
    f"ce_{name}": name for name in (*_REQUIRED, "specversion", "dataschema", "partitionkey")
} | {"content-type": "datacontenttype"}


def _safe_reason(exc: Exception) -> str:
    """Why a record is invalid, without quoting its values (they may be secrets)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
    if isinstance(exc, LookupError):
        return str(exc)  # the unknown type, which the record's header already shows
    return type(exc).__name__


def from_kafka(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
) -> Envelope[Any]:
    """Parse and validate a record; raise EnvelopeError with the reason if it is not ours.

    Binary content mode is read here directly, as the CloudEvents Kafka binding reads
    it (``ce_`` headers are the attributes, ``content-type`` the data's content type,
    the data is JSON): this is every consumer's hot path, and the SDK's generic reader
    cost 100 µs a record. ``tests/schemas/test_contracts.py`` holds the two to the same
    answers."""
    attrs: dict[str, str] = {}
    for name, raw in headers or ():
        attribute = _ATTRIBUTES.get(name) or _attribute(name)
        if attribute is None:
            continue
        try:
            attrs[attribute] = (raw if type(raw) is bytes else bytes(raw)).decode()
        except UnicodeDecodeError:
            raise EnvelopeError("unreadable CloudEvent: UnicodeDecodeError") from None
    if "type" not in attrs:
        raise EnvelopeError("not a CloudEvent in binary mode (no ce_type header)")
    if attrs.get("specversion") != "1.0":
        raise EnvelopeError("unreadable CloudEvent: specversion is not 1.0")
    missing = [name for name in _REQUIRED if not attrs.get(name)]
    if missing:
        raise EnvelopeError(f"missing CloudEvents attributes: {', '.join(missing)}")
    content_type = attrs.get("datacontenttype", _CONTENT_TYPE)
    if not content_type.split(";")[0].strip().endswith(("json", "+json")):
        raise EnvelopeError(f"unreadable CloudEvent: data is {content_type}, not JSON")
    try:
        time = datetime.datetime.fromisoformat(attrs["time"])
    except ValueError:
        raise EnvelopeError("time is not a timestamp") from None
    if time.tzinfo is None:
        raise EnvelopeError("time is not a timestamp with a time zone")
    try:
        cls = fact_class(attrs["type"])
        data = cls.model_validate_json(value or b"")
        sequence = int(attrs["sequence"])
    except (LookupError, ValidationError, ValueError, TypeError) as exc:
        raise EnvelopeError(f"invalid {attrs['type']}: {_safe_reason(exc)}") from exc
    try:
        return Envelope(
            id=attrs["id"],
            source=attrs["source"],
            data=data,
            tenant_id=attrs["tenantid"],
            causation_id=attrs["causationid"],
            correlation_id=attrs["correlationid"],
            sequence=sequence,
            traceparent=attrs["traceparent"],
            time=time,
        )
    except TenantMismatchError as exc:
        raise EnvelopeError(f"invalid {attrs['type']}: {exc}") from None
