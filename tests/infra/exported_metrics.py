"""The metrics agentlog's processes export, and the metric names a PromQL expression reads.

The alert rules (infra/prometheus/) and the Grafana dashboard (infra/grafana/) may read
these and Prometheus's own ``up``, nothing else: a renamed metric fails their tests.
"""

from __future__ import annotations

import re

# Names as exposed: counters with _total; a histogram as its _bucket, _sum and _count.
EXPORTED_METRICS = {
    "agentlog_consumer_lag": "gauge",  # role, group, topic, partition: records behind
    "agentlog_records_handled_total": "counter",  # role, topic
    "agentlog_records_dead_lettered_total": "counter",  # role, topic, reason
    "agentlog_handler_seconds": "histogram",  # role: time to handle a batch
    "agentlog_model_call_seconds": "histogram",  # provider, model
    "agentlog_model_tokens_total": "counter",  # provider, model, type: input | output
    "agentlog_model_call_errors_total": "counter",  # provider, model, code
    "agentlog_tool_call_seconds": "histogram",
    "agentlog_tool_call_errors_total": "counter",  # code
    "agentlog_turns_total": "counter",  # outcome: completed | failed | cancelled
    "agentlog_gateway_requests_total": "counter",  # route, status
    "agentlog_gateway_request_seconds": "histogram",  # route
}
# Prometheus's own, one per scraped target.
SCRAPE_METRICS = frozenset({"up"})

_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

# PromQL's keywords, which look like metric names but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"and", "or", "unless", "bool", "offset", "inf", "nan"}
)
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")


def series_names() -> frozenset[str]:
    """Every name a query may select: the exported series and ``up``."""
    names = set(SCRAPE_METRICS)
    for name, kind in EXPORTED_METRICS.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in _HISTOGRAM_SERIES)
        else:
            names.add(name)
    return frozenset(names)


def metric_for(series: str) -> str:
    """The exported metric a series belongs to (a histogram's for its _bucket)."""
    for suffix in _HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if EXPORTED_METRICS.get(base) == "histogram":
            return base
    return series


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects. Grafana's ``$variables`` may appear.

    Not a parser: it drops strings, label matchers, ranges and label lists, then takes
    every remaining name that is not called like a function and is not a keyword.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _LABEL_LIST.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana's variables
    names = set()
    for match in _NAME.finditer(text):
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names
