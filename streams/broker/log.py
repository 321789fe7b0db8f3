"""Disk-backed partition logs: segments (see segment.py), producer state, retention.

Besides its segments, a partition directory holds producer snapshots::

    00000000000000004096.snapshot   producer state as of that offset (JSON)

A snapshot is written when a segment is rolled; recovery loads the newest one and
replays the batches after it.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .producers import ProducerStateTable
from .records import BatchHeader, set_base_offset
from .segment import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    retention_ms: int = -1
    retention_bytes: int = -1
    max_message_bytes: int = 1048588


class PartitionLog:
    """The log of one partition: segments, producer state, and its start and end offsets."""

    def __init__(self, directory: Path, config: LogConfig) -> None:
        self.directory = directory
        self.config = config
        directory.mkdir(parents=True, exist_ok=True)
        self.segments: list[Segment] = []
        self.producers = ProducerStateTable()
        self._load()

    @property
    def log_start_offset(self) -> int:
        return self.segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def _load(self) -> None:
        bases = sorted(int(p.stem) for p in self.directory.glob("*.log"))
        if not bases:
            self.segments.append(Segment(self.directory, 0))
            return
        for base in bases[:-1]:
            segment = Segment(self.directory, base)
            segment.load_closed()
            self.segments.append(segment)
        active = Segment(self.directory, bases[-1])
        self.segments.append(active)
        snapshot_offset = self._load_producer_snapshot(active.base_offset)
        for segment in self.segments[:-1]:
            if segment.next_offset > snapshot_offset:
                self._replay_producers(segment, snapshot_offset)
        active.recover(self.producers_record)

    def producers_record(self, header: BatchHeader) -> None:
        self.producers.record(header, header.base_offset)

    def _replay_producers(self, segment: Segment, from_offset: int) -> None:
        for header in segment.scan_headers(0):
            if header.base_offset >= from_offset:
                self.producers_record(header)

    def _load_producer_snapshot(self, at_most: int) -> int:
        """Load the newest producer snapshot not after ``at_most``; return its offset."""
        offsets = sorted(
            int(p.stem) for p in self.directory.glob("*.snapshot") if int(p.stem) <= at_most
        )
        for offset in reversed(offsets):
            path = self.directory / f"{offset:020d}.snapshot"
            try:
                self.producers = ProducerStateTable.from_snapshot(json.loads(path.read_bytes()))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable producer snapshot", extra={"path": str(path)})
                continue
            return offset
        self.producers = ProducerStateTable()
        return self.log_start_offset

    def _write_producer_snapshot(self, offset: int) -> None:
        path = self.directory / f"{offset:020d}.snapshot"
        tmp = path.with_suffix(".snapshot.tmp")
        with open(tmp, "wb") as f:
            f.write(json.dumps(self.producers.snapshot()).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- appends ---------------------------------------------------------------------

    def append(self, batches: bytearray, headers: list[tuple[int, BatchHeader]]) -> int:
        """Assign offsets to already-validated batches and append them; return the base
        offset of the first. Batches must be free of duplicates (see producers.check)."""
        active = self._active_for(len(batches))
        base = active.next_offset
        next_offset = base
        placed = []
        for pos, header in headers:
            set_base_offset(batches, pos, next_offset, 0)
            placed_header = _with_base(header, next_offset)
            placed.append((pos, placed_header))
            next_offset = placed_header.next_offset
        active.append(batches, placed)
        for _pos, header in placed:
            self.producers.record(header, header.base_offset)
        return base

    def _active_for(self, incoming: int) -> Segment:
        active = self.segments[-1]
        now_ms = int(time.time() * 1000)
        too_big = active.size > 0 and active.size + incoming > self.config.segment_bytes
        too_old = active.size > 0 and now_ms - active.created_ms > self.config.segment_ms
        if too_big or too_old:
            return self.roll()
        return active

    def roll(self) -> Segment:
        """Seal the active segment and start a new one at the log end offset."""
        active = self.segments[-1]
        if active.size == 0:
            return active
        active.seal()
        self._write_producer_snapshot(active.next_offset)
        segment = Segment(self.directory, active.next_offset)
        self.segments.append(segment)
        return segment

    def flush(self) -> None:
        for segment in self.segments:
            if segment.dirty:
                segment.flush()

    # -- reads -----------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, at_least_one: bool = True) -> tuple[bytes, int]:
        """Batches from ``offset`` on, from one segment (see Segment.read)."""
        i = bisect.bisect_right([s.base_offset for s in self.segments], offset) - 1
        for segment in self.segments[max(i, 0) :]:
            if segment.next_offset > offset:
                data, count = segment.read(offset, max_bytes, at_least_one)
                if data or not at_least_one:
                    return data, count
        return b"", 0

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        for segment in self.segments:
            found = segment.offset_for_timestamp(timestamp)
            if found is not None:
                return found
        return None

    def max_timestamp(self) -> tuple[int, int]:
        """(offset, timestamp) of the record with the largest timestamp, Kafka's -3 query."""
        best_ts, best_offset = -1, -1
        for segment in self.segments:
            if segment.max_timestamp > best_ts:
                found = segment.offset_for_timestamp(segment.max_timestamp)
                if found is not None:
                    best_offset, best_ts = found
        return best_offset, best_ts

    # -- retention -------------------------------------------------------------------

    def enforce_retention(self, now_ms: int) -> int:
        """Delete whole segments past retention.ms or beyond retention.bytes.

        Returns the number of segments deleted. An expired active segment is rolled
        first, so the log start offset can reach the log end offset.
        """
        deleted = 0
        retention_ms = self.config.retention_ms
        if retention_ms >= 0:
            active = self.segments[-1]
            if active.size and active.max_timestamp < now_ms - retention_ms:
                self.roll()
            while len(self.segments) > 1 and self.segments[0].max_timestamp < now_ms - retention_ms:
                self.segments.pop(0).delete()
                deleted += 1
        retention_bytes = self.config.retention_bytes
        if retention_bytes >= 0:
            total = self.size_bytes
            while len(self.segments) > 1 and total - self.segments[0].size >= retention_bytes:
                total -= self.segments[0].size
                self.segments.pop(0).delete()
                deleted += 1
        if deleted:
            self._drop_snapshots_before(self.log_start_offset)
        return deleted

    def _drop_snapshots_before(self, offset: int) -> None:
        snapshots = sorted(int(p.stem) for p in self.directory.glob("*.snapshot"))
        # Keep the newest snapshot at or before the start: recovery starts from it.
        keep = max((s for s in snapshots if s <= offset), default=None)
        for s in snapshots:
            if s < offset and s != keep:
                (self.directory / f"{s:020d}.snapshot").unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()
        for segment in self.segments:
            segment.close()


def _with_base(header: BatchHeader, base_offset: int) -> BatchHeader:
    return replace(header, base_offset=base_offset, leader_epoch=0)
