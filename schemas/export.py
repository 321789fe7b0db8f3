"""JSON Schemas of every event type, committed under ``schemas/json/``, and the check that
keeps them a contract.

The committed files describe events already stored in topics. A model change is
compatible when every stored event still validates against the new model: no new
required fields, no changed field types, no event type removed. ``python -m
schemas.export`` writes new and compatible schemas and refuses breaking ones (bump the
type's version instead: ``…v2`` is a new type, and ``…v1`` stays readable).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import events  # noqa: F401  (registers every event type)
from .base import Fact

SCHEMA_DIR = Path(__file__).parent / "json"
_IGNORED_KEYS = {"description", "title", "default", "examples"}


def current_schemas() -> dict[str, dict[str, Any]]:
    schemas = {}
    for type_, cls in sorted(Fact.registry.items()):
        schema = cls.model_json_schema()
        schema["$id"] = cls.dataschema()
        schemas[type_] = schema
    return schemas


def committed_schemas(directory: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def breaking_changes(old: dict[str, Any], new: dict[str, Any], where: str = "") -> list[str]:
    """Why events valid under ``old`` might not be readable under ``new`` (empty: none)."""
    problems: list[str] = []
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(newly_required):
        problems.append(f"{where}{name}: newly required, stored events may lack it")
    for name, old_prop in old_props.items():
        if name in new_props and _shape(old_prop) != _shape(new_props[name]):
            problems.append(f"{where}{name}: type changed")
    for name, old_def in old.get("$defs", {}).items():
        new_def = new.get("$defs", {}).get(name)
        if new_def is None:
            continue  # a renamed or inlined definition is checked through the property
        problems.extend(breaking_changes(old_def, new_def, f"{where}{name}."))
    return problems


def _shape(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in _IGNORED_KEYS}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


def compatibility_report(
    committed: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]
) -> list[str]:
    problems = []
    for type_, old in committed.items():
        new = current.get(type_)
        if new is None:
            problems.append(f"{type_}: removed, but stored events have this type")
            continue
        problems.extend(f"{type_}: {p}" for p in breaking_changes(old, new))
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report; write nothing")
    args = parser.parse_args()
    committed = committed_schemas()
    current = current_schemas()
    problems = compatibility_report(committed, current)
    if problems:
        raise SystemExit("breaking changes:\n  " + "\n  ".join(problems))
    stale = [t for t, s in current.items() if committed.get(t) != s]
    if args.check:
        if stale:
            raise SystemExit(f"schemas out of date (run python -m schemas.export): {stale}")
        return
    SCHEMA_DIR.mkdir(exist_ok=True)
    for type_ in stale:
        (SCHEMA_DIR / f"{type_}.json").write_text(
            json.dumps(current[type_], indent=2, sort_keys=True) + "\n"
        )
        print(f"wrote {type_}")


if __name__ == "__main__":
    main()
