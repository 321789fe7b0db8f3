"""The workers' Prometheus metrics: model calls, tool calls and turns. The consumer
runtime's own (records, lag, handler time) are in ``streams.metrics``.

No label takes a value a tenant chose: ``/metrics`` answers anyone who reaches it, and
each new value is a new series. Providers, error codes and outcomes are fixed sets;
models are named only if the operator listed them (``ModelLabels``).
"""

from __future__ import annotations

from collections.abc import Iterable

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

# The model label of every model the operator did not list.
OTHER_MODEL = "other"


class ModelLabels:
    """The ``model`` label of a call: the provider's name of the model for the dev model
    and the models the operator listed (``AGENTLOG_METRICS_MODELS``, as agents name
    them: ``openai:gpt-4o``), ``other`` for any other model a tenant's agent names."""

    def __init__(self, listed: Iterable[str]) -> None:
        self._known = frozenset({"dev", *(name.strip() for name in listed)}) - {""}

    def of(self, agent_model: str, provider_model: str) -> str:
        return provider_model if agent_model in self._known else OTHER_MODEL
