"""The workers' Prometheus metrics: model calls, tool calls and turns. The consumer
runtime's own (records, lag, handler time) are in ``streams.metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Model calls last from a fraction of a second to minutes (retries included).
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

MODEL_CALL_SECONDS = Histogram(
    "agentlog_model_call_seconds",
    "Time of a model call, retries included",
    ["provider", "model"],
    buckets=_CALL_BUCKETS,
)
MODEL_TOKENS = Counter(
    "agentlog_model_tokens", "Tokens of model calls", ["provider", "model", "type"]
)
MODEL_CALL_ERRORS = Counter(
    "agentlog_model_call_errors", "Model calls that failed", ["provider", "model", "code"]
)
# Not labelled by tool: tools are named by tenants, and each name would be a series.
TOOL_CALL_SECONDS = Histogram(
    "agentlog_tool_call_seconds", "Time of a tool call", buckets=_CALL_BUCKETS
)
TOOL_CALL_ERRORS = Counter("agentlog_tool_call_errors", "Tool calls that failed", ["code"])
TURNS = Counter("agentlog_turns", "Turns that ended, by outcome", ["outcome"])
