"""What subscribers read on the output topic: a model's text as it streams, and each
call's whole text."""

from __future__ import annotations

from .turns import _TurnFact


class OutputDelta(_TurnFact):
    """``agentlog.output.delta.v1``: a piece of streamed model text, on the output
    topic for subscribers. A call that failed mid-stream and was retried streams again
    under the next ``attempt``: the text of earlier attempts is abandoned."""

    subsystem = "output"
    name = "delta"
    call_id: str
    index: int
    text: str
    attempt: int = 1


class OutputMessage(_TurnFact):
    """``agentlog.output.message.v1``: a model call's whole text; ``final`` when the
    model asked for no tool calls."""

    subsystem = "output"
    name = "message"
    call_id: str
    text: str
    final: bool
