"""Every version of the committed schema files, read from git: the tree at the merge base
with the main line and every version in HEAD's history. A schema file deleted and
re-exported in the working tree would hide a break; git does not forget it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .compat import CommittedVersion

SCHEMA_DIR = Path(__file__).parent / "json"
BASE_REF_ENV = "AGENTLOG_SCHEMA_BASE_REF"
_OTHER_REPOSITORY_ENV = {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"}
_Done = subprocess.CompletedProcess[bytes]
_LOG = ("log", "--reverse", "--topo-order", "--full-history", "-m", "--no-renames", "--raw")


class GitUnavailable(RuntimeError):
    """No git repository holds the schema files (git missing, or an installed copy)."""


class GitError(RuntimeError):
    """git is there but failed: never a reason to skip the check."""


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
