"""The compatibility rules of ``schemas.compat.breaking_changes``, on pydantic models.

Each breaking case carries a witness: an event the old schema accepts and the new one
refuses, so the case is a real break and not one the rules merely call so.
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.compat import Schema, breaking_changes
from schemas.export import current_schemas


def schema(*, forbid_extra: bool = False, **fields: Any) -> Schema:
    """The JSON Schema of an event model with ``fields`` (name=(type, default) or type)."""
    spec: dict[str, Any] = {k: v if isinstance(v, tuple) else (v, ...) for k, v in fields.items()}
    config = ConfigDict(extra="forbid" if forbid_extra else "ignore")
    model: type[BaseModel] = create_model("Event", __config__=config, **spec)
    return model.model_json_schema()


class Limits(BaseModel):
    limit: int = 0


class StricterLimits(BaseModel):
    limit: int = Field(0, le=10)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Red(enum.Enum):
    RED = "red"


class Colours(enum.Enum):
    RED = "red"
    BLUE = "blue"
    GREEN = "green"


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"


class Node(BaseModel):
    children: list[Node] = []
    parent: Node | None = None
    weight: int = 0


class StricterNode(BaseModel):
    children: list[StricterNode] = []
    parent: StricterNode | None = None
    weight: int = Field(0, ge=0)


Pet = Annotated[Cat | Dog, Field(discriminator="kind")]

BREAKING = {
    "removed field": (
        schema(a=str, b=(str, "")),
        schema(a=str),
        ("removed field", "b"),
        None,  # valid JSON under both schemas, but the model would drop ``b`` on replay
    ),
    "newly required": (schema(a=str), schema(a=str, b=int), ("newly required", "b"), {"a": "x"}),
    "optional became non-null": (
        schema(a=(str | None, None)),
        schema(a=(str, "")),
        ("narrowed", "a"),
        {"a": None},
    ),
    "number became integer": (schema(n=float), schema(n=int), ("narrowed", "n"), {"n": 1.5}),
    "string became integer": (schema(s=str), schema(s=int), ("narrowed", "s"), {"s": "x"}),
    "union lost a member": (schema(v=int | str), schema(v=int), ("narrowed", "v"), {"v": "x"}),
    "new maxLength": (
        schema(s=str),
        schema(s=Annotated[str, Field(max_length=3)]),
        ("narrowed", "s"),
        {"s": "abcd"},
    ),
    "stricter maximum": (
        schema(n=Annotated[int, Field(le=10)]),
        schema(n=Annotated[int, Field(lt=10)]),
        ("narrowed", "n"),
        {"n": 10},
    ),
    "a $ref'd object became stricter": (
        schema(limits=Limits),
        schema(limits=StricterLimits),
        ("narrowed", "limits.limit"),
        {"limits": {"limit": 11}},
    ),
    "a recursive object became stricter": (
        schema(root=Node),
        schema(root=StricterNode),
        ("narrowed", "root.weight"),
        {"root": {"weight": -1}},
    ),
    "list items narrowed": (
        schema(xs=list[float]),
        schema(xs=list[int]),
        ("narrowed", "xs[]"),
        {"xs": [1.5]},
    ),
    "map values narrowed": (
        schema(d=dict[str, float]),
        schema(d=dict[str, int]),
        ("narrowed", "d.*"),
        {"d": {"k": 1.5}},
    ),
    "unknown keys forbidden": (
        schema(a=str),
        schema(a=str, forbid_extra=True),
        ("narrowed", "*"),
        {"a": "x", "other": 1},
    ),
    "new format": (schema(u=str), schema(u=uuid.UUID), ("narrowed", "u"), {"u": "not-a-uuid"}),
    "removed Literal value": (
        schema(m=Literal["a", "b"]),
        schema(m=Literal["a"]),
        ("removed enum value", "m"),
        {"m": "b"},
    ),
    "changed const": (
        schema(m=Literal["a"]),
        schema(m=Literal["b"]),
        ("removed enum value", "m"),
        {"m": "a"},
    ),
    "removed Enum member": (
        schema(c=(Colour | None, None)),
        schema(c=(Red | None, None)),
        ("removed enum value", "c"),
        {"c": "blue"},
    ),
    "removed union variant": (
        schema(pet=Pet),
        schema(pet=Cat),
        ("removed enum value", "pet.kind"),
        {"pet": {"kind": "dog"}},
    ),
}


@pytest.mark.parametrize(("old", "new", "expected", "witness"), BREAKING.values(), ids=BREAKING)
def test_a_breaking_change_is_reported_with_its_kind_and_path(
    old: Schema, new: Schema, expected: tuple[str, str], witness: dict[str, Any] | None
) -> None:
    if witness is not None:
        assert _valid(old, witness)
        assert not _valid(new, witness)
    assert expected in [(b.kind, b.path) for b in breaking_changes(old, new)]


COMPATIBLE = {
    "string became nullable": (schema(a=str), schema(a=str | None)),
    "integer became number": (schema(n=int), schema(n=float)),
    "union gained a member": (schema(v=int), schema(v=int | str)),
    "added Literal value": (schema(m=Literal["a"]), schema(m=Literal["a", "b"])),
    "added Enum member": (schema(c=Colour), schema(c=Colours)),
    "added optional field": (schema(a=str), schema(a=str, note=(str, ""))),
    "required field got a default": (schema(a=str), schema(a=(str, ""))),
    "looser bounds": (
        schema(n=Annotated[int, Field(lt=5)], s=Annotated[str, Field(max_length=3)]),
        schema(n=Annotated[int, Field(le=5)], s=str),
    ),
    "format dropped": (schema(u=uuid.UUID), schema(u=str)),
    "unknown keys allowed again": (schema(a=str, forbid_extra=True), schema(a=str)),
    "union variant added": (schema(pet=Cat), schema(pet=Pet)),
    "descriptions, titles, examples and defaults": (
        schema(a=(int, 1), b=Annotated[str, Field(title="B", description="old")]),
        schema(a=(int, 2), b=Annotated[str, Field(title="Bee", examples=["x"])]),
    ),
    "a recursive object, unchanged": (schema(root=Node), schema(root=Node)),
}


@pytest.mark.parametrize(("old", "new"), COMPATIBLE.values(), ids=COMPATIBLE)
def test_a_compatible_change_is_not_reported(old: Schema, new: Schema) -> None:
    assert breaking_changes(old, new) == []


def test_every_current_schema_is_compatible_with_itself() -> None:
    for type_, current in current_schemas().items():
        assert breaking_changes(current, current) == [], type_


def test_a_break_says_what_it_breaks() -> None:
    (problem,) = breaking_changes(schema(m=Literal["a", "b"]), schema(m=Literal["a"]))
    assert str(problem) == "m: removed enum value: 'b' no longer accepted"


def _valid(schema_: Schema, instance: dict[str, Any]) -> bool:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return bool(jsonschema.Draft202012Validator(schema_, format_checker=checker).is_valid(instance))
