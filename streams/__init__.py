"""The log: the embedded broker, producing and consuming, topics and their catalog."""

from . import kafka_connection

kafka_connection.apply()
