"""Prometheus metrics of the embedded broker."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .groups import GroupCoordinator
from .topics import TopicRegistry


class BrokerMetrics:
    def __init__(
        self, registry: CollectorRegistry, topics: TopicRegistry, groups: GroupCoordinator
    ) -> None:
        self.registry = registry
        self.bytes_in = Counter(
            "agentlog_broker_bytes_in", "Record bytes appended", ["topic"], registry=registry
        )
        self.bytes_out = Counter(
            "agentlog_broker_bytes_out",
            "Record bytes sent to fetchers",
            ["topic"],
            registry=registry,
        )
        self.records_in = Counter(
            "agentlog_broker_records_in", "Records appended", ["topic"], registry=registry
        )
        self.records_out = Counter(
            "agentlog_broker_records_out",
            "Records sent to fetchers",
            ["topic"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "agentlog_broker_request_seconds",
            "Request handling time by API (long-polling fetches included)",
            ["api"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        registry.register(_StateCollector(lambda: topics, lambda: groups))

    def appended(self, topic: str, size: int, records: int) -> None:
        self.bytes_in.labels(topic).inc(size)
        self.records_in.labels(topic).inc(records)

    def sent(self, topic: str, size: int, records: int) -> None:
        self.bytes_out.labels(topic).inc(size)
        self.records_out.labels(topic).inc(records)


class _StateCollector(Collector):
    """Gauges read from broker state at scrape time."""

    def __init__(
        self, topics: Callable[[], TopicRegistry], groups: Callable[[], GroupCoordinator]
    ) -> None:
        self._topics = topics
        self._groups = groups

    def collect(self) -> Iterable[GaugeMetricFamily]:
        end = GaugeMetricFamily(
            "agentlog_broker_log_end_offset", "Log end offset", labels=["topic", "partition"]
        )
        start = GaugeMetricFamily(
            "agentlog_broker_log_start_offset", "Log start offset", labels=["topic", "partition"]
        )
        for topic in self._topics():
            for p in topic.partitions:
                end.add_metric([topic.name, str(p.index)], p.log.log_end_offset)
                start.add_metric([topic.name, str(p.index)], p.log.log_start_offset)
        groups = GaugeMetricFamily("agentlog_broker_groups", "Consumer groups", labels=["state"])
        counts: dict[str, int] = {}
        for group in self._groups().groups.values():
            counts[group.state.value] = counts.get(group.state.value, 0) + 1
        for state, count in sorted(counts.items()):
            groups.add_metric([state], count)
        yield end
        yield start
        yield groups
