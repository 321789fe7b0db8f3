"""Idempotent producers: a resent batch is acknowledged, never written twice."""

from __future__ import annotations

import datetime

from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.list_offsets.v7.request import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.types import BrokerId, ProducerId, TopicName
from kio.static.primitive import Records, i8, i16, i32, i64

from tests.streams.clients import ConfluentClient
from tests.streams.wire import WireClient, record_batch


def produce(wire: WireClient, topic: str, batch: bytes) -> tuple[ErrorCode, int]:
    response = wire.request(
        ProduceRequest(
            acks=i16(-1),
            timeout=datetime.timedelta(seconds=10),  # type: ignore[arg-type]
            topic_data=(
                TopicProduceData(
                    name=TopicName(topic),
                    partition_data=(PartitionProduceData(index=i32(0), records=Records(batch)),),
                ),
            ),
        )
    )
    result = response.responses[0].partition_responses[0]
    return result.error_code, result.base_offset


def log_end(wire: WireClient, topic: str) -> int:
    response = wire.request(
        ListOffsetsRequest(
            replica_id=BrokerId(-1),
            isolation_level=i8(0),
            topics=(
                ListOffsetsTopic(
                    name=TopicName(topic),
                    partitions=(
                        ListOffsetsPartition(
                            partition_index=i32(0), current_leader_epoch=i32(-1), timestamp=i64(-1)
                        ),
                    ),
                ),
            ),
        )
    )
    return int(response.topics[0].partitions[0].offset)


def test_resent_batch_is_acknowledged_once_and_gaps_are_refused(
    bootstrap: str, topic_name: str
) -> None:
    ConfluentClient(bootstrap).create_topic(topic_name, 1)
    with WireClient(bootstrap) as wire:
        init = wire.request(
            InitProducerIdRequest(
                transactional_id=None,
                transaction_timeout=datetime.timedelta(seconds=60),  # type: ignore[arg-type]
                producer_id=ProducerId(-1),
                producer_epoch=i16(-1),
            )
        )
        assert init.error_code is ErrorCode.none
        pid, epoch = int(init.producer_id), int(init.producer_epoch)

        def batch(seq: int, values: list[bytes]) -> bytes:
            return record_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)

        first = batch(0, [b"a", b"b", b"c"])
        assert produce(wire, topic_name, first) == (ErrorCode.none, 0)
        # The retry of a batch whose acknowledgement was lost.
        assert produce(wire, topic_name, first) == (ErrorCode.none, 0)
        assert log_end(wire, topic_name) == 3

        assert produce(wire, topic_name, batch(3, [b"d", b"e"])) == (ErrorCode.none, 3)
        error, _ = produce(wire, topic_name, batch(9, [b"gap"]))
        assert error is ErrorCode.out_of_order_sequence_number
        assert log_end(wire, topic_name) == 5

    values = [r.value for r in ConfluentClient(bootstrap).consume(topic_name, 5, timeout=10)]
    assert values == [b"a", b"b", b"c", b"d", b"e"]
