"""The export checks the models against what git holds, in throwaway repositories.

Each test builds a real git repository under its own ``tmp_path`` and checks the merge base
with the main line, every earlier version in HEAD's history, and the refusal to write a
breaking schema however the working tree was changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from schemas.compat import Break, Schema, compatibility_report, history_report
from schemas.export import BreakingChanges, committed_schemas, export
from schemas.history import BASE_REF_ENV, GitError, GitUnavailable, base_ref, git_history

TYPE = "agentlog.test.thing.v1"


class Thing(BaseModel):
    mode: Literal["a", "b"] = "a"


class NarrowedThing(BaseModel):  # stored events with mode "b" can no longer be read
    mode: Literal["a"] = "a"


class WiderThing(BaseModel):  # a new enum value, a nullable field and an optional one
    mode: Literal["a", "b", "c"] | None = "a"
    note: str = ""


def schemas(model: type[BaseModel], type_: str = TYPE) -> dict[str, Schema]:
    return {type_: model.model_json_schema()}


class Repo:
    """A git repository of its own, with the schema files at ``schemas/json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.schema_dir = root / "schemas" / "json"
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def write(self, current: dict[str, Schema]) -> None:
        """Write schema files as a careless export would: without any check."""
        self.schema_dir.mkdir(parents=True, exist_ok=True)
        for type_, schema in current.items():
            text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
            (self.schema_dir / f"{type_}.json").write_text(text)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """A fresh repository; git sees neither this machine's config nor this project."""
    monkeypatch.delenv(BASE_REF_ENV, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.invalid")
    root = tmp_path / "repo"
    root.mkdir()
    return Repo(root)


def kinds(problems: list[Break]) -> list[tuple[str, str, str]]:
    return [(p.type_, p.kind, p.path) for p in problems]


REMOVED_B = [(TYPE, "removed enum value", "mode")]


def test_a_deleted_and_re_exported_schema_file_is_refused(repo: Repo) -> None:
    repo.write(schemas(Thing))
    first = repo.commit("v1")
    (repo.schema_dir / f"{TYPE}.json").unlink()
    # The working tree alone no longer knows the old schema: it would let the break through.
    assert compatibility_report(committed_schemas(repo.schema_dir), schemas(NarrowedThing)) == []

    with pytest.raises(BreakingChanges) as refused:
        export(repo.schema_dir, schemas(NarrowedThing))
    assert kinds(refused.value.problems) == REMOVED_B
    assert refused.value.problems[0].source == f"merge-base with main {first[:10]}"
    assert not (repo.schema_dir / f"{TYPE}.json").exists(), "a refused export writes nothing"

    repo.write(schemas(NarrowedThing))  # re-exported by hand, past the check
    with pytest.raises(BreakingChanges) as refused:
        export(repo.schema_dir, schemas(NarrowedThing), check=True)
    assert kinds(refused.value.problems) == REMOVED_B


def test_a_deleted_schema_directory_is_still_checked(repo: Repo) -> None:
    repo.write(schemas(Thing))
    repo.commit("v1")
    shutil.rmtree(repo.root / "schemas")
    with pytest.raises(BreakingChanges) as refused:
        export(repo.schema_dir, schemas(NarrowedThing))
    assert kinds(refused.value.problems) == REMOVED_B


def test_a_break_committed_in_an_earlier_commit_is_caught(repo: Repo) -> None:
    repo.write(schemas(Thing))
    first = repo.commit("v1")
    repo.write(schemas(NarrowedThing))
    repo.commit("narrow the thing, straight onto main")
    (repo.root / "README").write_text("later work\n")
    head = repo.commit("later work")
    assert base_ref(repo.root, head) == (head, "merge-base with main")
    # The base holds the narrowed schema, so the base alone would pass...
    at_base = [v for v in git_history(repo.schema_dir) if v.source.startswith("merge-base")]
    assert history_report(at_base, schemas(NarrowedThing)) == []
    # ...but events stored under the first version are still in the topic.
    (problem,) = history_report(git_history(repo.schema_dir), schemas(NarrowedThing))
    assert kinds([problem]) == REMOVED_B
    assert problem.source == f"commit {first[:10]}"
    with pytest.raises(BreakingChanges):
        export(repo.schema_dir, schemas(NarrowedThing), check=True)


def test_a_removed_type_is_caught_even_after_its_file_was_deleted_in_git(repo: Repo) -> None:
    repo.write(schemas(Thing) | schemas(Thing, "agentlog.test.other.v1"))
    repo.commit("two types")
    (repo.schema_dir / "agentlog.test.other.v1.json").unlink()
    repo.commit("drop a type")
    problems = history_report(git_history(repo.schema_dir), schemas(Thing))
    assert kinds(problems) == [("agentlog.test.other.v1", "removed type", "")]


def test_widening_and_an_added_optional_field_pass_against_history(repo: Repo) -> None:
    repo.write(schemas(Thing))
    repo.commit("v1")
    assert export(repo.schema_dir, schemas(WiderThing)) == [TYPE]
    assert committed_schemas(repo.schema_dir) == schemas(WiderThing)
    repo.commit("widen")
    assert export(repo.schema_dir, schemas(WiderThing), check=True) == []
    assert history_report(git_history(repo.schema_dir), schemas(WiderThing)) == []


def test_check_names_stale_schemas_and_writes_nothing(repo: Repo) -> None:
    repo.write(schemas(Thing))
    repo.commit("v1")
    new_type = schemas(Thing, "agentlog.test.new.v1")
    assert export(repo.schema_dir, schemas(Thing) | new_type, check=True) == [
        "agentlog.test.new.v1"
    ]
    assert sorted(committed_schemas(repo.schema_dir)) == [TYPE]


def test_the_base_is_the_merge_base_with_the_main_line(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = repo.commit("first")
    on_main = repo.commit("on main")
    repo.git("checkout", "-q", "-b", "feature")
    head = repo.commit("on a branch")
    assert base_ref(repo.root, head) == (on_main, "merge-base with main")
    repo.git("update-ref", "refs/remotes/origin/main", first)
    assert base_ref(repo.root, head) == (first, "merge-base with origin/main")
    repo.git("update-ref", "-d", "refs/remotes/origin/main")
    repo.git("branch", "-q", "-m", "main", "trunk")
    assert base_ref(repo.root, head) == (head, "HEAD")
    monkeypatch.setenv(BASE_REF_ENV, "trunk~1")
    assert base_ref(repo.root, head) == (first, "trunk~1")
    monkeypatch.setenv(BASE_REF_ENV, "no-such-ref")
    with pytest.raises(GitError, match=BASE_REF_ENV):  # a failure, never a skip
        git_history(repo.schema_dir)


def test_the_base_ref_is_read_even_when_head_never_had_its_schemas(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.commit("empty")
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("a branch made before the type existed")
    repo.git("checkout", "-q", "main")
    repo.write(schemas(Thing))
    main = repo.commit("the type lands on main")
    repo.git("checkout", "-q", "feature")
    assert git_history(repo.schema_dir) == []  # not in HEAD's history, nor at the merge base
    monkeypatch.setenv(BASE_REF_ENV, "main")
    (version,) = git_history(repo.schema_dir)
    assert (version.type_, version.source) == (TYPE, f"main {main[:10]}")
    assert kinds(history_report([version], {})) == [(TYPE, "removed type", "")]


def test_a_copy_outside_any_repository_is_unavailable_not_compatible(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "site-packages" / "schemas" / "json"
    copy.mkdir(parents=True)
    with pytest.raises(GitUnavailable, match="not a git repository"):
        git_history(copy)
    assert export(copy, schemas(Thing), check=True) == [TYPE]
    assert "NOT checked against git history" in capsys.readouterr().err


def test_an_untracked_copy_inside_a_repository_is_unavailable(repo: Repo) -> None:
    (repo.root / ".gitignore").write_text(".venv/\n")
    repo.write(schemas(Thing))
    repo.commit("v1")
    copy = repo.root / ".venv" / "lib" / "schemas" / "json"
    shutil.copytree(repo.schema_dir, copy)
    with pytest.raises(GitUnavailable, match=r"ignores \.venv/lib/schemas/json/"):
        git_history(copy)
