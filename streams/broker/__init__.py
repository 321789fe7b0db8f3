"""The embedded, disk-backed, single-node Kafka-protocol broker (``server.Broker``).

Nothing is imported here: ``agentlog`` reads the broker's options from ``cli`` on every
start and must not pay for loading the broker itself.
"""
