"""Idempotent-producer state of one partition: epochs and sequences per producer id.

Follows Kafka's rules: a batch whose sequence range matches one of the producer's last
five batches is a duplicate (acknowledged with its original offset, not written again);
any other batch must continue the sequence exactly, or it is rejected as out of order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

from .records import NO_PRODUCER_ID, BatchHeader

_MAX_TRACKED_BATCHES = 5
_SEQUENCE_MODULUS = 2**31


class ProduceError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class _Batch:
    first_seq: int
    last_seq: int
    base_offset: int


@dataclass(slots=True)
class _Producer:
    epoch: int
    batches: deque[_Batch] = field(default_factory=lambda: deque(maxlen=_MAX_TRACKED_BATCHES))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


class ProducerStateTable:
    """Per-partition producer table; rebuilt from snapshots plus the log tail on start."""

    def __init__(self) -> None:
        self._producers: dict[int, _Producer] = {}

    def check(self, header: BatchHeader) -> int | None:
        """Return the stored base offset if the batch is a duplicate, None if it is new.

        Raises ProduceError for fenced epochs and out-of-order sequences.
        """
        if header.producer_id == NO_PRODUCER_ID:
            return None
        producer = self._producers.get(header.producer_id)
        if producer is None:
            if header.base_sequence != 0:
                raise ProduceError(
                    ErrorCode.out_of_order_sequence_number,
                    f"producer {header.producer_id} unknown and sequence "
                    f"{header.base_sequence} is not 0",
                )
            return None
        if header.producer_epoch < producer.epoch:
            raise ProduceError(
                ErrorCode.invalid_producer_epoch,
                f"producer {header.producer_id} epoch {header.producer_epoch} "
                f"is older than {producer.epoch}",
            )
        if header.producer_epoch > producer.epoch:
            if header.base_sequence != 0:
                raise ProduceError(
                    ErrorCode.out_of_order_sequence_number,
                    f"new epoch {header.producer_epoch} must start at sequence 0",
                )
            return None
        for batch in producer.batches:
            if batch.first_seq == header.base_sequence and batch.last_seq == header.last_sequence:
                return batch.base_offset
        expected = (producer.last_seq + 1) % _SEQUENCE_MODULUS
        if header.base_sequence != expected:
            raise ProduceError(
                ErrorCode.out_of_order_sequence_number,
                f"producer {header.producer_id} sent sequence {header.base_sequence}, "
                f"expected {expected}",
            )
        return None

    def record(self, header: BatchHeader, base_offset: int) -> None:
        """Remember a batch that was appended at ``base_offset``."""
        if header.producer_id == NO_PRODUCER_ID:
            return
        producer = self._producers.get(header.producer_id)
        if producer is None or producer.epoch != header.producer_epoch:
            producer = _Producer(header.producer_epoch)
            self._producers[header.producer_id] = producer
        producer.batches.append(_Batch(header.base_sequence, header.last_sequence, base_offset))

    def snapshot(self) -> dict[str, Any]:
        return {
            str(pid): {
                "epoch": p.epoch,
                "batches": [[b.first_seq, b.last_seq, b.base_offset] for b in p.batches],
            }
            for pid, p in self._producers.items()
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> ProducerStateTable:
        table = cls()
        for pid, entry in data.items():
            producer = _Producer(int(entry["epoch"]))
            for first, last, base in entry["batches"]:
                producer.batches.append(_Batch(int(first), int(last), int(base)))
            table._producers[int(pid)] = producer
        return table
