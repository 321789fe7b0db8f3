"""Timestamp lookups inside one record batch, for ListOffsets by time."""

from __future__ import annotations

from .records import HEADER_SIZE, BatchHeader


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a zigzag varint at ``pos``; return (value, next position)."""
    shift = 0
    raw = 0
    while True:
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return (raw >> 1) ^ -(raw & 1), pos


def first_offset_at_or_after(batch: bytes, header: BatchHeader, timestamp: int) -> tuple[int, int]:
    """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``.

    Records of an uncompressed batch are read one by one. A compressed batch is
    answered at batch granularity (its base offset and max timestamp): the broker
    never decompresses.
    """
    if header.compressed:
        return header.base_offset, header.max_timestamp
    pos = HEADER_SIZE
    for _ in range(header.record_count):
        length, body = _varint(batch, pos)
        ts_delta, after_ts = _varint(batch, body + 1)  # skip the attributes byte
        offset_delta, _ = _varint(batch, after_ts)
        if header.base_timestamp + ts_delta >= timestamp:
            return header.base_offset + offset_delta, header.base_timestamp + ts_delta
        pos = body + length
    return header.base_offset, header.max_timestamp
