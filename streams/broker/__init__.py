"""The embedded, disk-backed, single-node Kafka-protocol broker."""

from .server import Broker, BrokerConfig

__all__ = ["Broker", "BrokerConfig"]
