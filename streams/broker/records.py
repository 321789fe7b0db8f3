"""Kafka record batches (magic v2) as the broker sees them: a header to read and a CRC.

The broker never decodes records on the produce and fetch paths: it validates each
batch's CRC, rewrites the base offset and stores the bytes as received, so compressed
batches pass through untouched.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = _HEADER.size  # 61
# batchLength counts the bytes after itself.
_LENGTH_PREFIX = 12
_CRC_START = 21
COMPRESSION_MASK = 0x07
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
NO_PRODUCER_ID = -1


class CorruptBatchError(ValueError):
    """A record batch that cannot be read: bad length, magic or CRC."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    size: int  # bytes of the whole batch, header included
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        return (self.base_sequence + self.last_offset_delta) % (2**31)

    @property
    def compressed(self) -> bool:
        return bool(self.attributes & COMPRESSION_MASK)


def read_header(data: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Read the batch header at ``pos``; raise CorruptBatchError if it cannot be a batch."""
    if len(data) - pos < HEADER_SIZE:
        raise CorruptBatchError("truncated batch header")
    (
        base_offset,
        length,
        leader_epoch,
        magic,
        crc,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
    ) = _HEADER.unpack_from(data, pos)
    if magic != 2:
        raise CorruptBatchError(f"unsupported record batch magic {magic}")
    size = length + _LENGTH_PREFIX
    if size < HEADER_SIZE or last_offset_delta < 0 or record_count < 0:
        raise CorruptBatchError("invalid batch length or counts")
    return BatchHeader(
        base_offset,
        size,
        leader_epoch,
        magic,
        crc,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count,
    )


def check_crc(data: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> None:
    end = pos + header.size
    if end > len(data):
        raise CorruptBatchError("truncated batch body")
    if crc32c.crc32c(memoryview(data)[pos + _CRC_START : end]) != header.crc:
        raise CorruptBatchError("record batch CRC mismatch")


def iter_batches(
    data: bytes | bytearray | memoryview, *, verify: bool = True
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for each batch; a trailing partial batch is an error."""
    pos = 0
    while pos < len(data):
        header = read_header(data, pos)
        if verify:
            check_crc(data, pos, header)
        elif pos + header.size > len(data):
            raise CorruptBatchError("truncated batch body")
        yield pos, header
        pos += header.size


def iter_complete_batches(
    data: bytes | bytearray | memoryview,
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield whole batches only, stopping quietly at a partial one (fetch responses may
    end with one)."""
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        header = read_header(data, pos)
        if pos + header.size > len(data):
            return
        yield pos, header
        pos += header.size


def set_base_offset(batch: bytearray, pos: int, base_offset: int, leader_epoch: int) -> None:
    """Assign the batch its log offsets. Both fields lie before the CRC'd range."""
    struct.pack_into(">q", batch, pos, base_offset)
    struct.pack_into(">i", batch, pos + 12, leader_epoch)
