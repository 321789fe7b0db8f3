"""Admin operations the clients rely on: configs, topic deletion, group listings."""

from __future__ import annotations

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.streams.clients import ConfluentClient, Sent


@pytest.fixture
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def test_describe_configs_shows_overrides_and_defaults(
    admin: AdminClient, bootstrap: str, topic_name: str
) -> None:
    ConfluentClient(bootstrap).create_topic(topic_name, 2, {"retention.ms": "-1"})
    resource = ConfigResource("topic", topic_name)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "-1"
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"


def test_invalid_topic_requests_get_kafka_errors(admin: AdminClient, topic_name: str) -> None:
    from confluent_kafka.admin import NewTopic

    bad_config = admin.create_topics([NewTopic(topic_name, 1, 1, config={"no.such": "1"})])
    with pytest.raises(confluent_kafka.KafkaException) as err:
        bad_config[topic_name].result(10)
    assert err.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG

    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(10)
    again = admin.create_topics([NewTopic(topic_name, 1, 1)])
    with pytest.raises(confluent_kafka.KafkaException) as err:
        again[topic_name].result(10)
    assert err.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS


def test_deleted_topic_disappears(admin: AdminClient, bootstrap: str, topic_name: str) -> None:
    client = ConfluentClient(bootstrap)
    client.create_topic(topic_name, 1)
    client.produce(topic_name, [Sent(key=None, value=b"x")])
    admin.delete_topics([topic_name])[topic_name].result(10)
    metadata = admin.list_topics(timeout=10)
    assert topic_name not in metadata.topics


def test_groups_are_listed_and_described(
    admin: AdminClient, bootstrap: str, topic_name: str
) -> None:
    client = ConfluentClient(bootstrap)
    client.create_topic(topic_name, 2)
    group = f"g-{topic_name}"
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic_name])
    try:
        while not consumer.assignment():
            consumer.poll(0.2)
        listed = admin.list_consumer_groups().result(10)
        assert group in {g.group_id for g in listed.valid}
        described = admin.describe_consumer_groups([group])[group].result(10)
        assert str(described.state).endswith("STABLE")
        (member,) = described.members
        assignment = member.assignment.topic_partitions
        assert sorted(tp.partition for tp in assignment) == [0, 1]
    finally:
        consumer.close()
