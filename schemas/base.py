"""The base of every record on a topic: a versioned, past-tense fact with a CloudEvents type.

A record's ``type`` is built from parts (``agentlog.<subsystem>.<name>.v<version>``) in
one place, and every record class registers itself, so routing an unknown type is an
error rather than a silent default.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

TYPE_PREFIX = "agentlog"
SCHEMA_BASE_URI = "https://agentlog.dev/schemas"


def event_type(subsystem: str, name: str, version: int) -> str:
    return f"{TYPE_PREFIX}.{subsystem}.{name}.v{version}"


class UnknownEventTypeError(LookupError):
    def __init__(self, type_: str) -> None:
        super().__init__(f"unknown event type {type_!r}")
        self.type = type_


class Fact(BaseModel):
    """Data of one CloudEvent. Subclasses set the class variables below."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    subsystem: ClassVar[str]
    name: ClassVar[str]
    schema_version: ClassVar[int] = 1
    # Which field of the data holds the aggregate id (the CloudEvents subject and the
    # Kafka key). Aggregates: tenant, agent, session.
    subject_field: ClassVar[str]
    registry: ClassVar[dict[str, type[Fact]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            type_ = cls.ce_type()
            if type_ in Fact.registry:
                raise TypeError(f"event type {type_} defined twice")
            Fact.registry[type_] = cls

    @classmethod
    def ce_type(cls) -> str:
        return event_type(cls.subsystem, cls.name, cls.schema_version)

    @classmethod
    def dataschema(cls) -> str:
        return f"{SCHEMA_BASE_URI}/{cls.ce_type()}.json"

    @property
    def subject(self) -> str:
        return str(getattr(self, self.subject_field))


def fact_class(type_: str) -> type[Fact]:
    try:
        return Fact.registry[type_]
    except KeyError:
        raise UnknownEventTypeError(type_) from None
