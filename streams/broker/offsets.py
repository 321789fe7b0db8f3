"""Committed consumer-group offsets, kept in an append-only file that survives kill -9.

Each line is ``<crc32c hex> <json>``; loading stops at the first line that does not
check out (a torn write) and truncates the file there. The file is compacted on load.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import crc32c

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str | None
    leader_epoch: int


class OffsetStore:
    def __init__(self, data_dir: Path, *, fsync_each_commit: bool) -> None:
        directory = data_dir / "groups"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "offsets.log"
        self._fsync_each_commit = fsync_each_commit
        self._offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.dirty = False

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            entry = _decode(line)
            if entry is None:
                log.warning(
                    "truncating torn offsets log", extra={"path": str(self.path), "at": good}
                )
                break
            self._apply(entry)
            good += len(line)
        self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for group, offsets in self._offsets.items():
                for (topic, partition), committed in offsets.items():
                    f.write(_encode(_entry(group, topic, partition, committed)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _apply(self, entry: dict[str, object]) -> None:
        group = str(entry["g"])
        key = (str(entry["t"]), int(entry["p"]))  # type: ignore[call-overload]
        offsets = self._offsets.setdefault(group, {})
        if entry["o"] is None:
            offsets.pop(key, None)
            if not offsets:
                del self._offsets[group]
            return
        offsets[key] = CommittedOffset(
            int(entry["o"]),  # type: ignore[call-overload]
            entry["m"] if isinstance(entry["m"], str) else None,
            int(entry["e"]),  # type: ignore[call-overload]
        )

    def commit(self, group: str, commits: list[tuple[str, int, CommittedOffset]]) -> None:
        lines = []
        for topic, partition, committed in commits:
            entry = _entry(group, topic, partition, committed)
            self._apply(entry)
            lines.append(_encode(entry))
        self._write(b"".join(lines))

    def fetch(self, group: str, topic: str, partition: int) -> CommittedOffset | None:
        return self._offsets.get(group, {}).get((topic, partition))

    def partitions(self, group: str) -> list[tuple[str, int]]:
        return sorted(self._offsets.get(group, {}))

    def groups(self) -> list[str]:
        return list(self._offsets)

    def delete_topic(self, topic: str) -> None:
        lines = []
        for group, offsets in list(self._offsets.items()):
            for key in [k for k in offsets if k[0] == topic]:
                entry: dict[str, object] = {"g": group, "t": topic, "p": key[1], "o": None}
                self._apply(entry)
                lines.append(_encode(entry))
        if lines:
            self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        os.write(self._fd, data)
        if self._fsync_each_commit:
            os.fsync(self._fd)
        else:
            self.dirty = True

    def flush(self) -> None:
        os.fsync(self._fd)
        self.dirty = False

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def _entry(group: str, topic: str, partition: int, committed: CommittedOffset) -> dict[str, object]:
    return {
        "g": group,
        "t": topic,
        "p": partition,
        "o": committed.offset,
        "m": committed.metadata,
        "e": committed.leader_epoch,
    }


def _encode(entry: dict[str, object]) -> bytes:
    body = json.dumps(entry, separators=(",", ":")).encode()
    return b"%08x %s\n" % (crc32c.crc32c(body), body)


def _decode(line: bytes) -> dict[str, object] | None:
    if not line.endswith(b"\n") or len(line) < 10:
        return None
    crc, body = line[:8], line[9:-1]
    try:
        if int(crc, 16) != crc32c.crc32c(body):
            return None
        entry = json.loads(body)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None
