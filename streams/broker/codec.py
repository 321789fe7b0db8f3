"""Kafka wire frames <-> kio entities.

kio gives one dataclass per API version. Handlers describe a response once, as plain
dicts, and ``build`` turns that into the entity of whichever version was asked for:
fields the version lacks are dropped, fields it has but the dict omits take their
defaults, and ints become the exact types kio's writers want (ErrorCode, timedelta).
"""

from __future__ import annotations

import datetime
import io
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, fields
from functools import cache
from typing import Any

from kio import index
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_schema_field_type,
    is_optional,
)
from kio.static.protocol import Entity

_API_HEADER = struct.Struct(">hhi")
_LENGTH = struct.Struct(">i")


class MalformedRequestError(ValueError):
    """A frame that cannot be decoded; the connection that sent it is closed."""


@dataclass(frozen=True, slots=True)
class RequestFrame:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """(api key, api version, correlation id): readable even when the version is not."""
    if len(frame) < _API_HEADER.size:
        raise MalformedRequestError("frame shorter than a request header")
    api_key, api_version, correlation_id = _API_HEADER.unpack_from(frame)
    return api_key, api_version, correlation_id


# kio finds a schema by importing its module by name on every call: resolved once each.
load_request_schema = cache(index.load_request_schema)
load_response_schema = cache(index.load_response_schema)


def decode_request(frame: bytes) -> RequestFrame:
    api_key, api_version, _ = peek_header(frame)
    try:
        request_type = load_request_schema(api_key, api_version)
    except Exception as exc:
        raise MalformedRequestError(f"unknown API {api_key} v{api_version}") from exc
    header_type = request_type.__header_schema__
    try:
        header, header_size = entity_reader(header_type)(frame, 0)
        body, _ = entity_reader(request_type)(frame, header_size)
    except Exception as exc:
        raise MalformedRequestError(f"cannot decode API {api_key} v{api_version}: {exc}") from exc
    return RequestFrame(api_key, api_version, header.correlation_id, header.client_id, body)


def response_type(api_key: int, api_version: int) -> type[Entity]:
    return load_response_schema(api_key, api_version)


def encode_response(correlation_id: int, response: Entity) -> bytes:
    response_cls = type(response)
    header_type = response_cls.__header_schema__  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    entity_writer(header_type)(buffer, header_type(correlation_id=correlation_id))
    entity_writer(response_cls)(buffer, response)
    data = buffer.getbuffer()
    _LENGTH.pack_into(data, 0, len(data) - 4)
    return bytes(data)


# -- building entities from plain values --------------------------------------------

_Coerce = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    coerce: _Coerce
    has_default: bool
    zero: Any


def build(cls: Any, data: Mapping[str, Any]) -> Any:
    """Construct the kio entity ``cls`` from a dict, recursively (see module docstring)."""
    kwargs = {}
    for plan in _plan(cls):
        if plan.name in data:
            kwargs[plan.name] = plan.coerce(data[plan.name])
        elif not plan.has_default:
            kwargs[plan.name] = plan.zero
    return cls(**kwargs)


@cache
def _plan(cls: Any) -> tuple[_FieldPlan, ...]:
    return tuple(_field_plan(f) for f in fields(cls))


def _field_plan(f: Field[Any]) -> _FieldPlan:
    kind = classify_field(f)
    optional = is_optional(f)
    has_default = f.default is not MISSING or f.default_factory is not MISSING
    if isinstance(kind, EntityTupleField):
        nested = kind.type_

        def coerce_entities(value: Any) -> Any:
            if value is None:
                return None
            return tuple(v if isinstance(v, nested) else build(nested, v) for v in value)

        return _FieldPlan(f.name, coerce_entities, has_default, None if optional else ())
    if isinstance(kind, EntityField):
        single = kind.type_

        def coerce_entity(value: Any) -> Any:
            if value is None or isinstance(value, single):
                return value
            return build(single, value)

        zero_entity = None if optional or has_default else build(single, {})
        return _FieldPlan(f.name, coerce_entity, has_default, zero_entity)
    scalar = _scalar_coercion(get_schema_field_type(f))
    if isinstance(kind, PrimitiveTupleField):

        def coerce_tuple(value: Any) -> Any:
            return None if value is None else tuple(scalar(v) for v in value)

        return _FieldPlan(f.name, coerce_tuple, has_default, None if optional else ())
    # A None given for a field that cannot be null (a string before the version that
    # made it nullable, say) is written as the type's zero value.
    zero = None if optional else _ZEROS.get(get_schema_field_type(f), 0)
    return _FieldPlan(f.name, lambda v: zero if v is None else scalar(v), has_default, zero)


def _ms(value: Any) -> datetime.timedelta:
    return (
        value if isinstance(value, datetime.timedelta) else datetime.timedelta(milliseconds=value)
    )


def _error(value: Any) -> ErrorCode:
    return value if isinstance(value, ErrorCode) else ErrorCode(value)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _scalar_coercion(kafka_type: str) -> _Coerce:
    if kafka_type == "error_code":
        return _error
    if kafka_type in ("timedelta_i32", "timedelta_i64"):
        return _ms
    if kafka_type == "uuid":
        return _uuid
    return _identity


def _identity(value: Any) -> Any:
    return value


_ZEROS: dict[str, Any] = {
    "error_code": ErrorCode.none,
    "string": "",
    "bool": False,
    "bytes": b"",
    "records": None,
    "uuid": uuid.UUID(int=0),
    "timedelta_i32": datetime.timedelta(0),
    "timedelta_i64": datetime.timedelta(0),
    "float64": 0.0,
}
