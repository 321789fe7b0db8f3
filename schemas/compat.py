"""Whether a schema change breaks readers of stored events: every event valid under an
old schema must stay valid under the new one. No newly required or removed field, no
narrowed type, no removed enum value, no removed type; widening stays compatible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal

import jsonschema

Schema = dict[str, Any]
Schemas = Mapping[str, Schema]  # event type → its schema
Kind = Literal["newly required", "removed field", "narrowed", "removed enum value", "removed type"]

# Keywords that describe and never constrain: changing them breaks no reader.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$id", "$schema", "$comment", "$defs"}
    | {"deprecated", "readOnly", "writeOnly", "discriminator"}
)
_LOWER = ("minLength", "minItems", "minProperties")
_UPPER = ("maxLength", "maxItems", "maxProperties")
_NUMERIC = ((1, ("minimum", "exclusiveMinimum")), (-1, ("maximum", "exclusiveMaximum")))
_HANDLED = frozenset(
    {"$ref", "type", "anyOf", "oneOf", "properties", "required", "additionalProperties"}
    | {"items", "multipleOf", *_LOWER, *_UPPER, *(key for _, keys in _NUMERIC for key in keys)}
)


@dataclass(frozen=True)
class Break:
    """One reason a stored event might no longer be readable, at a field path."""

    kind: Kind
    path: str  # e.g. "config.tools[]"; "" for the event itself
    detail: str
    type_: str = ""
    source: str = ""  # the committed version it breaks, e.g. "commit 1a2b3c4"

    def __str__(self) -> str:
        text = "".join(f"{p}: " for p in (self.type_, self.path) if p) + self.kind
        return f"{text}: {self.detail}" + (f" (vs {self.source})" if self.source else "")


@dataclass(frozen=True)
class CommittedVersion:
    """One version of one type's schema file, as git holds it."""

    type_: str
    schema: Schema
    source: str  # e.g. "commit 1a2b3c4" or "merge-base with origin/main 1a2b3c4d5e"


def breaking_changes(old: Schema, new: Schema) -> list[Break]:
    """Why events valid under ``old`` might be invalid under ``new``: a structural subschema
    check of what pydantic v2 emits, where a constraint not proven wider counts as narrowed."""
    return _Comparison(old, new).compare(old, new, "")


class _Comparison:
    """Compares two schemas, each resolving its local ``$ref``s against its own root."""

    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.roots = (old_root, new_root)
        self.active: set[tuple[str, str]] = set()  # $ref pairs being compared (recursion)

    def compare(self, old: Any, new: Any, path: str) -> list[Break]:
        old = {} if old is True else old
        if old is False or new is True or (new is not False and not set(new) - _ANNOTATIONS):
            return []  # nothing to read, or anything is accepted
        if new is False:
            return [Break("narrowed", path, "no longer accepts any value")]
        pair = (str(old.get("$ref", "")), str(new.get("$ref", "")))
        if pair != ("", "") and pair in self.active:
            return []  # a recursive type: the pair is being compared further up
        self.active.add(pair)
        try:
            return self._compare(_resolve(old, self.roots[0]), _resolve(new, self.roots[1]), path)
        finally:
            self.active.discard(pair)

    def _compare(self, old: Schema, new: Schema, path: str) -> list[Break]:
        if "enum" in old or "const" in old:  # finitely many values: check each one
            values = old["enum"] if "enum" in old else [old["const"]]
            lost = [v for v in values if not _accepts(new, self.roots[1], v)]
            return [Break("removed enum value", path, f"{v!r} no longer accepted") for v in lost]
        olds, news = _branches(old, self.roots[0]), _branches(new, self.roots[1])
        if len(olds) > 1 or len(news) > 1:
            return self._unions(olds, news, new, path)
        types = (old.get("type"), new.get("type"))
        if types[1] is not None and types[0] != types[1] and types != ("integer", "number"):
            return [Break("narrowed", path, f"type {types[0] or 'any'} → {types[1]}")]
        problems = _constraints(old, new, path)
        if "items" in new:
            problems += self.compare(old.get("items", True), new["items"], f"{path}[]")
        return problems + self._compare_objects(old, new, path)

    def _unions(self, olds: list[Any], news: list[Any], new: Schema, path: str) -> list[Break]:
        """Every old alternative must be accepted by some new one."""
        problems: list[Break] = []
        for old in olds:
            if not isinstance(old, bool) and {"enum", "const"} & set(_resolve(old, self.roots[0])):
                problems += self.compare(old, new, path)  # its values may spread over branches
                continue
            tries = [self.compare(old, n, path) for n in news]
            closest = min(tries, key=len)  # why the closest alternative refuses it, if all do
            problems += closest
        return problems

    def _compare_objects(self, old: Schema, new: Schema, path: str) -> list[Break]:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_extra = old.get("additionalProperties", True)
        new_extra = new.get("additionalProperties")  # None: pydantic drops unknown keys
        added = sorted(set(new.get("required", [])) - set(old.get("required", [])))
        problems = [
            Break("newly required", _join(path, n), "old events may lack it") for n in added
        ]
        for name, old_prop in old_props.items():
            if name in new_props:
                problems += self.compare(old_prop, new_props[name], _join(path, name))
            elif new_extra is None or self.compare(old_prop, new_extra, path):
                problems.append(Break("removed field", _join(path, name), "stored events carry it"))
        if isinstance(old_extra, dict):  # a typed map: its keys may now be new properties
            for name in sorted(set(new_props) - set(old_props)):
                problems += self.compare(old_extra, new_props[name], _join(path, name))
        if new_extra is not None:
            problems += self.compare(old_extra, new_extra, _join(path, "*"))
        return problems


def _constraints(old: Schema, new: Schema, path: str) -> list[Break]:
    """Bounds that got stricter, and other constraints added or changed (so maybe stricter)."""
    changed = [k for k in _LOWER if k in new and new[k] > old.get(k, 0)]
    changed += [k for k in _UPPER if k in new and new[k] < old.get(k, float("inf"))]
    for sign, keys in _NUMERIC:
        old_bound, new_bound = _bound(old, sign, keys), _bound(new, sign, keys)
        if new_bound is not None and (old_bound is None or new_bound > old_bound):
            changed += [k for k in keys if k in new]
    old_step, new_step = (Fraction(str(s.get("multipleOf", 0))) for s in (old, new))
    if new_step and (not old_step or (old_step / new_step).denominator > 1):
        changed.append("multipleOf")
    other = sorted(set(new) - _ANNOTATIONS - _HANDLED)  # enum, const, format, pattern…
    changed += [k for k in other if _strip(new[k]) != _strip(old.get(k))]
    return [Break("narrowed", path, f"{k} {old.get(k, 'none')} → {new[k]}") for k in changed]


def _bound(schema: Schema, sign: int, keys: tuple[str, str]) -> tuple[float, bool] | None:
    """The bound as (value times sign, exclusive), so that a larger one is stricter."""
    return max(((schema[k] * sign, k != keys[0]) for k in keys if k in schema), default=None)


def _resolve(schema: Schema, root: Schema) -> Schema:
    """``schema`` with its local ``$ref`` replaced by the target, its siblings kept."""
    for _ in range(64):
        ref = schema.get("$ref")
        if ref is None:
            return schema
        if ref == "#" or str(ref).startswith("#/$defs/"):
            target = root if ref == "#" else root.get("$defs", {}).get(ref[len("#/$defs/") :])
            if isinstance(target, dict):
                schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
                continue
        raise ValueError(f"cannot resolve $ref {ref!r} (only #/$defs/… is compared)")
    raise ValueError(f"$ref cycle at {schema.get('$ref')!r}")


def _branches(schema: Schema, root: Schema) -> list[Any]:
    """The alternatives of a union (``anyOf``, ``oneOf``, a list of types), flattened; a
    ``$ref`` to a non-union stays a ``$ref`` so that recursion is still detected."""
    for key in ("anyOf", "oneOf"):  # oneOf read as anyOf: it accepts no more than that
        if key in schema:
            rest = {k: v for k, v in schema.items() if k != key}
            out: list[Any] = []
            for sub in schema[key]:
                merged = sub if isinstance(sub, bool) else {**rest, **sub}
                flat = [] if isinstance(merged, bool) else _branches(_resolve(merged, root), root)
                out += flat if len(flat) > 1 else [merged]
            return out
    if isinstance(schema.get("type"), list):
        return [{**schema, "type": t} for t in schema["type"]]
    return [schema]


def _accepts(schema: Schema, root: Schema, value: Any) -> bool:
    """Whether ``value`` is valid under ``schema``, a part of ``root``."""
    doc = {**{k: v for k, v in schema.items() if k != "$id"}, "$defs": root.get("$defs", {})}
    return bool(jsonschema.Draft202012Validator(doc).is_valid(value))


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _ANNOTATIONS}
    return [_strip(v) for v in value] if isinstance(value, list) else value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def compatibility_report(committed: Schemas, current: Schemas, source: str = "") -> list[Break]:
    """What breaks readers of events stored under ``committed``."""
    return history_report([CommittedVersion(t, s, source) for t, s in committed.items()], current)


def history_report(versions: Iterable[CommittedVersion], current: Schemas) -> list[Break]:
    """What breaks readers of events stored under any of ``versions``, once per break."""
    seen: dict[tuple[str, str, str, str], Break] = {}
    for version in versions:
        new = current.get(version.type_)
        found = [Break("removed type", "", "stored events have this type")]
        for b in breaking_changes(version.schema, new) if new is not None else found:
            b = replace(b, type_=version.type_, source=version.source)
            seen.setdefault((b.type_, b.kind, b.path, b.detail), b)
    return list(seen.values())
