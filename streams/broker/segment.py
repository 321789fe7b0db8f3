"""One log segment on disk: the batch file and its two sparse indexes.

Files of a segment, named by its base offset::

    00000000000000000000.log        record batches as received, base offsets rewritten
    00000000000000000000.index      (relative offset int32, file position uint32) pairs
    00000000000000000000.timeindex  (max timestamp int64, relative offset int32) pairs

Only the active (last) segment of a partition can hold a torn tail: a segment is fsynced
with its indexes when it is rolled. Recovery therefore validates the active segment batch
by batch (CRC included) and truncates it at the first invalid batch.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from .records import (
    HEADER_SIZE,
    BatchHeader,
    CorruptBatchError,
    check_crc,
    iter_complete_batches,
    read_header,
)
from .timestamps import first_offset_at_or_after

log = logging.getLogger(__name__)

INDEX_INTERVAL_BYTES = 4096
_INDEX_ENTRY = struct.Struct(">iI")
_TIME_ENTRY = struct.Struct(">qi")


class Segment:
    """One segment file and its two sparse indexes, also held in memory."""

    def __init__(self, directory: Path, base_offset: int) -> None:
        self.base_offset = base_offset
        stem = directory / f"{base_offset:020d}"
        self.path = stem.with_suffix(".log")
        self.index_path = stem.with_suffix(".index")
        self.time_index_path = stem.with_suffix(".timeindex")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._index_fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._time_fd = os.open(self.time_index_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self._fd).st_size
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.created_ms = int(time.time() * 1000)
        self._index_offsets: list[int] = []
        self._index_positions: list[int] = []
        self._time_stamps: list[int] = []
        self._time_offsets: list[int] = []
        self._bytes_since_index = 0
        self.dirty = False

    # -- loading ---------------------------------------------------------------------

    def recover(self, on_batch: Callable[[BatchHeader], None]) -> int:
        """Validate every batch, truncate a torn or corrupt tail, rebuild the indexes.

        Returns the number of bytes truncated.
        """
        os.ftruncate(self._index_fd, 0)
        os.ftruncate(self._time_fd, 0)
        self._index_offsets.clear()
        self._index_positions.clear()
        self._time_stamps.clear()
        self._time_offsets.clear()
        self._bytes_since_index = 0
        self.max_timestamp = -1
        self.next_offset = self.base_offset
        file_size = self.size
        pos = 0
        while pos < file_size:
            head = os.pread(self._fd, HEADER_SIZE, pos)
            try:
                header = read_header(head)
                if header.base_offset < self.next_offset:
                    raise CorruptBatchError("offsets go backwards")
                body = os.pread(self._fd, header.size, pos)
                check_crc(body, 0, header)
            except CorruptBatchError as exc:
                log.warning(
                    "truncating torn segment tail",
                    extra={"segment": str(self.path), "position": pos, "reason": str(exc)},
                )
                break
            self._note_batch(header, pos)
            on_batch(header)
            pos += header.size
        truncated = file_size - pos
        if truncated:
            os.ftruncate(self._fd, pos)
            self.size = pos
        self.created_ms = _mtime_ms(self.path) if pos else self.created_ms
        return truncated

    def load_closed(self) -> None:
        """Load a rolled (fsynced) segment from its index files."""
        ok = self._load_indexes()
        if not ok:
            self.recover(lambda _header: None)
            return
        # The time index of a closed segment ends with the segment's max timestamp,
        # and the tail after the last offset-index entry is at most a few batches.
        start = self._index_positions[-1] if self._index_positions else 0
        self.max_timestamp = self._time_stamps[-1] if self._time_stamps else -1
        self.next_offset = self.base_offset
        for header in self.scan_headers(start):
            self.next_offset = header.next_offset
            self.max_timestamp = max(self.max_timestamp, header.max_timestamp)
        self.created_ms = _mtime_ms(self.path)

    def _load_indexes(self) -> bool:
        raw = _read_all(self._index_fd)
        times = _read_all(self._time_fd)
        if len(raw) % _INDEX_ENTRY.size or len(times) % _TIME_ENTRY.size:
            return False
        for rel, position in _INDEX_ENTRY.iter_unpack(raw):
            if position >= self.size or (
                self._index_offsets and rel <= self._index_offsets[-1] - self.base_offset
            ):
                return False
            self._index_offsets.append(self.base_offset + rel)
            self._index_positions.append(position)
        for stamp, rel in _TIME_ENTRY.iter_unpack(times):
            self._time_stamps.append(stamp)
            self._time_offsets.append(self.base_offset + rel)
        return True

    def scan_headers(self, start: int) -> list[BatchHeader]:
        headers = []
        pos = start
        while pos + HEADER_SIZE <= self.size:
            header = read_header(os.pread(self._fd, HEADER_SIZE, pos))
            headers.append(header)
            pos += header.size
        return headers

    # -- writing ---------------------------------------------------------------------

    def append(self, data: bytes | bytearray, headers: list[tuple[int, BatchHeader]]) -> None:
        position = self.size
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        for pos, header in headers:
            self._note_batch(header, position + pos, persist=True)
        self.size += len(data)
        self.dirty = True

    def _note_batch(self, header: BatchHeader, position: int, persist: bool = False) -> None:
        if self._bytes_since_index >= INDEX_INTERVAL_BYTES or not self._index_offsets:
            rel = header.base_offset - self.base_offset
            self._index_offsets.append(header.base_offset)
            self._index_positions.append(position)
            entry = _INDEX_ENTRY.pack(rel, position)
            if header.max_timestamp > self.max_timestamp:
                self._time_stamps.append(header.max_timestamp)
                self._time_offsets.append(header.base_offset)
                time_entry = _TIME_ENTRY.pack(header.max_timestamp, rel)
            else:
                time_entry = b""
            self._bytes_since_index = 0
            # Recovery rebuilds the indexes of the active segment, so writing them
            # without fsync is safe.
            os.write(self._index_fd, entry)
            if time_entry:
                os.write(self._time_fd, time_entry)
        self._bytes_since_index += header.size
        self.max_timestamp = max(self.max_timestamp, header.max_timestamp)
        self.next_offset = header.next_offset

    def seal(self) -> None:
        """Close the segment for appends: final time-index entry, then fsync all three files."""
        if self.max_timestamp >= 0 and (
            not self._time_stamps or self._time_stamps[-1] < self.max_timestamp
        ):
            last_rel = max(self.next_offset - 1 - self.base_offset, 0)
            os.write(self._time_fd, _TIME_ENTRY.pack(self.max_timestamp, last_rel))
            self._time_stamps.append(self.max_timestamp)
            self._time_offsets.append(self.base_offset + last_rel)
        self.flush()

    def flush(self) -> None:
        os.fsync(self._fd)
        os.fsync(self._index_fd)
        os.fsync(self._time_fd)
        self.dirty = False

    # -- reading ---------------------------------------------------------------------

    def position_of(self, offset: int) -> tuple[int, BatchHeader] | None:
        """Find the batch that contains ``offset`` (or the first batch after it)."""
        i = bisect.bisect_right(self._index_offsets, offset) - 1
        pos = self._index_positions[i] if i >= 0 else 0
        while pos + HEADER_SIZE <= self.size:
            header = read_header(os.pread(self._fd, HEADER_SIZE, pos))
            if header.last_offset >= offset:
                return pos, header
            pos += header.size
        return None

    def read(self, offset: int, max_bytes: int, at_least_one: bool) -> tuple[bytes, int]:
        """Whole batches from the one holding ``offset``, at most max_bytes; with
        ``at_least_one`` the first batch is returned even when larger, so that a batch
        above the fetch limit can still be consumed. Returns (data, record count)."""
        found = self.position_of(offset)
        if found is None:
            return b"", 0
        pos, first = found
        if first.size > max_bytes and not at_least_one:
            return b"", 0
        length = min(max(first.size, max_bytes), self.size - pos)
        data = os.pread(self._fd, length, pos)
        end = count = 0
        for batch_pos, header in iter_complete_batches(data):
            end = batch_pos + header.size
            count += header.record_count
        return (data[:end] if end != len(data) else data), count

    def read_batch(self, pos: int, header: BatchHeader) -> bytes:
        return os.pread(self._fd, header.size, pos)

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """First (offset, timestamp) at or after ``timestamp`` in this segment."""
        if self.max_timestamp < timestamp:
            return None
        i = bisect.bisect_left(self._time_stamps, timestamp) - 1
        start_offset = self._time_offsets[i] if i >= 0 else self.base_offset
        found = self.position_of(start_offset)
        if found is None:
            return None
        pos = found[0]
        while pos + HEADER_SIZE <= self.size:
            header = read_header(os.pread(self._fd, HEADER_SIZE, pos))
            if header.max_timestamp >= timestamp:
                return first_offset_at_or_after(self.read_batch(pos, header), header, timestamp)
            pos += header.size
        return None

    def close(self) -> None:
        for fd in (self._fd, self._index_fd, self._time_fd):
            os.close(fd)

    def delete(self) -> None:
        self.close()
        for path in (self.path, self.index_path, self.time_index_path):
            path.unlink(missing_ok=True)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)
