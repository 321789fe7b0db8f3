"""One fixed event context for fold tests: a fold reads nothing else, so what it returns
can be written out exactly."""

from __future__ import annotations

import datetime

from projections.ops import Context

T = datetime.datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=datetime.UTC)
CTX = Context(
    event_id="evt-1",
    tenant_id="tenant-a",
    causation_id="cmd-1",
    time=T,
    partition=2,
    offset=41,
)
# ``conversation.CONFIG`` as the tables store it.
CONFIG_JSON = {
    "name": "calculator",
    "model": "dev:echo",
    "system_prompt": "",
    "tools": ["lookup"],
    "max_steps": 8,
    "max_tool_calls": 16,
}
