"""JSON Schemas of every event type, committed under ``schemas/json/``, and the check that
keeps them a contract: topics keep events forever, so an event stored under any version
ever committed must stay readable (``compat``), and every version git holds is checked
(``history``). ``python -m schemas.export`` writes new and compatible schemas and refuses
breaking ones (add a new version instead: ``…v2`` is a new type, ``…v1`` stays).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import events  # noqa: F401  (registers every event type)
from .base import Fact
from .compat import Break, CommittedVersion, Schema, Schemas, history_report
from .history import SCHEMA_DIR, GitError, GitUnavailable, git_history


def current_schemas() -> dict[str, Schema]:
    registry = sorted(Fact.registry.items())
    return {t: {**cls.model_json_schema(), "$id": cls.dataschema()} for t, cls in registry}


def committed_schemas(directory: Path = SCHEMA_DIR) -> dict[str, Schema]:
    """The schema files in the working tree: what the export writes, not what git holds."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


class BreakingChanges(Exception):
    """The models can no longer read every committed schema."""

    def __init__(self, problems: list[Break]) -> None:
        lines = "".join(f"\n  {p}" for p in problems)
        super().__init__(f"breaking changes (add a new version of the type instead):{lines}")
        self.problems = problems


def export(schema_dir: Path, current: Schemas, *, check: bool = False) -> list[str]:
    """Write the schemas that changed (with ``check``, only name them); refuse to when the
    models cannot read the working tree's files or any version git holds."""
    committed = committed_schemas(schema_dir) if schema_dir.is_dir() else {}
    versions = [CommittedVersion(t, s, "working tree") for t, s in committed.items()]
    try:
        versions = git_history(schema_dir) + versions  # name the commit a break is against
    except GitUnavailable as exc:
        print(f"warning: schemas NOT checked against git history: {exc}", file=sys.stderr)
    problems = history_report(versions, current)
    if problems:
        raise BreakingChanges(problems)
    stale = [t for t, s in current.items() if committed.get(t) != s]
    if not check:
        schema_dir.mkdir(parents=True, exist_ok=True)
        for type_ in stale:
            text = json.dumps(current[type_], indent=2, sort_keys=True) + "\n"
            (schema_dir / f"{type_}.json").write_text(text)
    return stale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report; write nothing")
    args = parser.parse_args(argv)
    try:
        stale = export(SCHEMA_DIR, current_schemas(), check=args.check)
    except (BreakingChanges, GitError) as exc:
        raise SystemExit(str(exc)) from None
    if args.check and stale:
        raise SystemExit(f"schemas out of date (run python -m schemas.export): {stale}")
    for type_ in [] if args.check else stale:
        print(f"wrote {type_}")


if __name__ == "__main__":
    main()
