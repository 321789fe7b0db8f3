"""JSON Schemas of every event type, committed under ``schemas/json/``, and the check that
keeps them a contract: topics keep events forever, so an event stored under any version ever
committed must stay readable (no newly required or removed field, no narrowed type, no
removed enum value, no removed type). Versions are read from git, the merge base with the
main line and HEAD's whole history, since a deleted and re-exported file in the working tree
would hide a break. ``python -m schemas.export`` writes new and compatible schemas and
refuses breaking ones (add a new version instead: ``…v2`` is a new type, ``…v1`` stays).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import jsonschema

from . import events  # noqa: F401  (registers every event type)
from .base import Fact

SCHEMA_DIR = Path(__file__).parent / "json"
BASE_REF_ENV = "AGENTLOG_SCHEMA_BASE_REF"
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


def current_schemas() -> dict[str, Schema]:
    registry = sorted(Fact.registry.items())
    return {t: {**cls.model_json_schema(), "$id": cls.dataschema()} for t, cls in registry}


def committed_schemas(directory: Path = SCHEMA_DIR) -> dict[str, Schema]:
    """The schema files in the working tree: what the export writes, not what git holds."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


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


_OTHER_REPOSITORY_ENV = {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"}
_Done = subprocess.CompletedProcess[bytes]
_LOG = ("log", "--reverse", "--topo-order", "--full-history", "-m", "--no-renames", "--raw")


class GitUnavailable(RuntimeError):
    """No git repository holds the schema files (git missing, or an installed copy)."""


class GitError(RuntimeError):
    """git is there but failed: never a reason to skip the check."""


@dataclass(frozen=True)
class CommittedVersion:
    """One version of one type's schema file, as git holds it."""

    type_: str
    schema: Schema
    source: str  # e.g. "commit 1a2b3c4" or "merge-base with origin/main 1a2b3c4d5e"


def git_history(schema_dir: Path = SCHEMA_DIR) -> list[CommittedVersion]:
    """Every version of every schema file in git, the tree at ``base_ref`` and each one in
    HEAD's history, as stored events may have any; GitUnavailable if no repository has them."""
    top, prefix = _locate(schema_dir)
    head = _git(top, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False).stdout.strip()
    base = base_ref(top, head.decode())
    versions: dict[tuple[str, str], str] = {}  # (path, blob) → where it was first seen
    if base is not None:
        sha, label = base
        for entry in _git(top, "ls-tree", "-z", sha, "--", prefix).stdout.decode().split("\0"):
            if entry:  # "<mode> blob <blob>\t<path>"
                versions.setdefault((entry.split("\t")[1], entry.split()[2]), f"{label} {sha[:10]}")
        revs = sorted({sha, head.decode()} - {""})
        log = _git(top, *_LOG, "--no-abbrev", "--format=\1%h", *revs, "--", prefix).stdout.decode()
        commit = ""
        for line in log.splitlines():  # "\1<commit>" or ":<modes> <old> <new> <status>\t<path>"
            if line.startswith("\1"):
                commit = line[1:11]
            elif line.startswith(":"):
                meta, path = line.split("\t", 1)
                old_mode, new_mode, old_blob, new_blob = meta[1:].split()[:4]
                for mode, blob, how in ((new_mode, new_blob, ""), (old_mode, old_blob, "before ")):
                    if mode.startswith("100") and blob.strip("0"):
                        versions.setdefault((path, blob), f"{how}commit {commit}")
    in_dir = re.compile(re.escape(prefix) + r"[^/]+\.json")
    versions = {k: v for k, v in versions.items() if in_dir.fullmatch(k[0])}
    if not versions and not _git(top, "check-ignore", "-q", prefix or ".", check=False).returncode:
        raise GitUnavailable(f"{top} ignores {prefix}: an installed copy, with no history")
    return _read_blobs(top, versions)


def base_ref(top: Path, head: str) -> tuple[str, str] | None:
    """The commit whose schemas are the contract and how it was chosen: $AGENTLOG_SCHEMA_BASE_REF,
    else the merge base of HEAD with origin/main, else with main, else HEAD (None: no commit)."""
    override = os.environ.get(BASE_REF_ENV)
    if override:
        found = _git(top, "rev-parse", "-q", "--verify", f"{override}^{{commit}}", check=False)
        if found.returncode:
            raise GitError(f"{BASE_REF_ENV}={override!r} names no commit in {top}")
        return found.stdout.decode().strip(), override
    if not head:
        return None
    for line in ("origin/main", "main"):
        merge_base = _git(top, "merge-base", "HEAD", line, check=False)
        if merge_base.returncode == 0:
            return merge_base.stdout.decode().strip(), f"merge-base with {line}"
    return head, "HEAD"


def _locate(schema_dir: Path) -> tuple[Path, str]:
    """The repository's top directory, and the schema directory's path inside it."""
    anchor = schema_dir  # the directory may be gone from the working tree, not from git
    while not anchor.is_dir():
        anchor = anchor.parent
    if shutil.which("git") is None:
        raise GitUnavailable("git is not installed")
    found = _git(anchor, "rev-parse", "--show-toplevel", "--show-prefix", check=False)
    if found.returncode:  # only "no repository" may skip the check, any other failure fails it
        error = found.stderr.decode().strip()
        kind = GitUnavailable if "not a git repository" in error else GitError
        raise kind(f"{schema_dir}: {error}")
    top, prefix = found.stdout.decode().split("\n")[:2]
    if anchor != schema_dir:
        prefix += schema_dir.relative_to(anchor).as_posix() + "/"
    return Path(top), prefix


def _read_blobs(top: Path, versions: Mapping[tuple[str, str], str]) -> list[CommittedVersion]:
    """The schemas of ``versions``, read by one ``git cat-file --batch``."""
    out = _git(top, "cat-file", "--batch", stdin=b"".join(f"{b}\n".encode() for _, b in versions))
    result, at = [], 0
    for (path, blob), source in versions.items():
        header_end = out.stdout.index(b"\n", at)
        header = out.stdout[at:header_end].split()  # "<blob> blob <size>" or "<blob> missing"
        if len(header) != 3:
            raise GitError(f"git has no object {blob} ({path}, {source}): a partial clone?")
        at = header_end + 1 + int(header[2]) + 1
        try:
            schema = json.loads(out.stdout[header_end + 1 : at - 1])
        except ValueError as exc:
            raise GitError(f"{path} at {source} is not JSON: {exc}") from None
        result.append(CommittedVersion(path.rsplit("/", 1)[-1][: -len(".json")], schema, source))
    return result


def _git(cwd: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> _Done:
    env = {k: v for k, v in os.environ.items() if k not in _OTHER_REPOSITORY_ENV}
    command = ["git", "-c", "core.quotePath=false", *args]
    done = subprocess.run(command, cwd=cwd, input=stdin, capture_output=True, env=env, check=False)
    if check and done.returncode:
        raise GitError(f"git {' '.join(args)} in {cwd}: {done.stderr.decode().strip()}")
    return done


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
