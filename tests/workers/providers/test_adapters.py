"""The provider adapters against a real HTTP server speaking each provider's protocol.

One suite, run once per protocol: streamed text, tool calls assembled from fragments,
usage, HTTP errors, a connection cut mid-stream, stalls, and retries around them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from schemas.events import MessageValue, ToolCallValue, UsageValue
from workers.providers.anthropic import AnthropicMessages
from workers.providers.base import ModelProvider, ModelRequest, ProviderError, ToolSpec
from workers.providers.openai import OpenAIChat
from workers.providers.protocol_server import ModelServer, Reply
from workers.providers.retry import RetryPolicy, complete_with_retries

WEATHER = ToolSpec(
    name="weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
CONVERSATION = ModelRequest(
    model="m-1",
    call_id="call-1",
    messages=[
        MessageValue(role="system", content="Be brief."),
        MessageValue(role="user", content="Weather in Oslo and Rome?"),
        MessageValue(
            role="assistant",
            content="Looking.",
            tool_calls=[
                ToolCallValue(id="c1", name="weather", arguments={"city": "Oslo"}),
                ToolCallValue(id="c2", name="weather", arguments={"city": "Rome"}),
            ],
        ),
        MessageValue(role="tool", content="sunny", tool_call_id="c1"),
        MessageValue(role="tool", content="rain", tool_call_id="c2"),
    ],
    tools=[WEATHER],
)
FAST = RetryPolicy(max_retries=2, timeout_s=5, backoff_base_s=0.01, backoff_max_s=0.05)


@pytest.fixture
def server() -> Iterator[ModelServer]:
    """A server per test: what one test scripted never answers another."""
    running = ModelServer().start()
    yield running
    running.stop()


@pytest.fixture(params=["openai", "anthropic"])
async def provider(
    request: pytest.FixtureRequest, server: ModelServer
) -> AsyncIterator[ModelProvider]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
        if request.param == "openai":
            yield OpenAIChat(client, f"{server.url}/v1", "sk-test")
        else:
            yield AnthropicMessages(client, server.url, "ak-test")


class Deltas:
    def __init__(self) -> None:
        self.pieces: list[str] = []

    async def __call__(self, text: str) -> None:
        self.pieces.append(text)


async def test_text_streams_in_order_with_usage(
    provider: ModelProvider, server: ModelServer
) -> None:
    # Cached input is a part of the input, however the provider counts it.
    used = UsageValue(input_tokens=42, output_tokens=7, cached_input_tokens=12)
    server.script(Reply(chunks=("Sun", "ny in ", "Oslo."), usage=used))
    deltas = Deltas()
    response = await provider.complete(CONVERSATION, deltas)
    assert deltas.pieces == ["Sun", "ny in ", "Oslo."]
    assert response.text == "Sunny in Oslo."
    assert response.tool_calls == []
    assert response.usage == used


async def test_tool_calls_are_assembled_from_fragments(
    provider: ModelProvider, server: ModelServer
) -> None:
    calls = (
        ToolCallValue(id="t1", name="weather", arguments={"city": "Oslo", "days": [1, 2]}),
        ToolCallValue(id="t2", name="clock", arguments={}),
    )
    server.script(Reply(chunks=("Checking.",), tool_calls=calls))
    response = await provider.complete(CONVERSATION)
    assert response.text == "Checking."
    assert response.tool_calls == list(calls)
    assert response.finish_reason in ("tool_calls", "tool_use")


async def test_the_conversation_reaches_the_provider_intact(
    provider: ModelProvider, server: ModelServer
) -> None:
    await provider.complete(CONVERSATION)
    (received,) = server.received
    assert received.request.model == "m-1"
    assert received.request.tools == [WEATHER]
    assert [
        (m.role, m.content, m.tool_calls, m.tool_call_id) for m in received.request.messages
    ] == [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in CONVERSATION.messages]
    assert received.headers["X-Agentlog-Call-Id"] == "call-1"
    if received.protocol == "openai":
        assert received.headers["Authorization"] == "Bearer sk-test"
        assert received.body["stream_options"] == {"include_usage": True}
    else:
        assert received.headers["x-api-key"] == "ak-test"
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert received.body["system"] == "Be brief."
        # Both tool results travel in one user message, as the API wants.
        assert [m["role"] for m in received.body["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (500, "MODEL_UNAVAILABLE", True),
        (503, "MODEL_UNAVAILABLE", True),
        (429, "MODEL_RATE_LIMITED", True),
        (400, "MODEL_BAD_REQUEST", False),
        (401, "MODEL_AUTH_FAILED", False),
        (404, "MODEL_BAD_REQUEST", False),
    ],
)
async def test_http_errors_map_to_codes(
    provider: ModelProvider, server: ModelServer, status: int, code: str, retryable: bool
) -> None:
    server.script(Reply(status=status, retry_after=1.5 if status == 429 else None))
    with pytest.raises(ProviderError) as failed:
        await provider.complete(CONVERSATION)
    assert (failed.value.code, failed.value.retryable) == (code, retryable)
    assert str(status) in str(failed.value)
    if status == 429:
        assert failed.value.retry_after == 1.5


async def test_a_cut_mid_stream_is_a_retryable_failure(
    provider: ModelProvider, server: ModelServer
) -> None:
    server.script(
        Reply(chunks=("one ", "two ", "three"), cut_after=2, usage=UsageValue(input_tokens=9))
    )
    deltas = Deltas()
    with pytest.raises(ProviderError) as failed:
        await provider.complete(CONVERSATION, deltas)
    assert failed.value.code == "MODEL_UNAVAILABLE"
    assert failed.value.retryable
    assert deltas.pieces == ["one ", "two "]
    if isinstance(provider, AnthropicMessages):  # message_start told the input tokens
        assert failed.value.usage == UsageValue(input_tokens=9, output_tokens=1)


async def test_a_stream_without_its_final_event_is_a_retryable_failure(
    provider: ModelProvider, server: ModelServer
) -> None:
    server.script(Reply(chunks=("one ", "two ", "three"), end_after=3))
    with pytest.raises(ProviderError) as failed:
        await provider.complete(CONVERSATION)
    assert (failed.value.code, failed.value.retryable) == ("MODEL_UNAVAILABLE", True)
    assert "ended before" in str(failed.value)


async def test_a_stalled_provider_times_out(provider: ModelProvider, server: ModelServer) -> None:
    server.script(Reply(chunks=("late",), stall_s=3))
    with pytest.raises(ProviderError) as failed:
        await provider.complete(CONVERSATION)
    assert failed.value.code == "MODEL_TIMEOUT"
    assert failed.value.retryable


async def test_retries_recover_and_count_every_attempt(
    provider: ModelProvider, server: ModelServer
) -> None:
    server.script(
        Reply(status=503),
        Reply(chunks=("par", "tial"), cut_after=1, usage=UsageValue(input_tokens=5)),
        Reply(chunks=("whole ", "answer"), usage=UsageValue(input_tokens=5, output_tokens=2)),
    )
    seen: list[tuple[int, str]] = []

    async def on_delta(attempt: int, text: str) -> None:
        seen.append((attempt, text))

    outcome = await complete_with_retries(provider, CONVERSATION, on_delta, FAST)
    assert outcome.attempts == 3
    assert outcome.response.text == "whole answer"
    assert seen == [(2, "par"), (3, "whole "), (3, "answer")]
    cut_usage = 5 if isinstance(provider, AnthropicMessages) else 0
    assert outcome.usage.input_tokens == 5 + cut_usage
    assert len(server.received) == 3


async def test_retries_stop_at_once_on_a_non_retryable_error(
    provider: ModelProvider, server: ModelServer
) -> None:
    server.script(Reply(status=400), Reply(chunks=("never",)))
    with pytest.raises(ProviderError) as failed:
        await complete_with_retries(provider, CONVERSATION, None, FAST)
    assert failed.value.code == "MODEL_BAD_REQUEST"
    assert len(server.received) == 1
    await provider.complete(CONVERSATION)  # takes the reply left in the script


async def test_retries_give_up_after_the_policy(
    provider: ModelProvider, server: ModelServer
) -> None:
    server.script(*(Reply(status=500) for _ in range(FAST.max_retries + 1)))
    with pytest.raises(ProviderError) as failed:
        await complete_with_retries(provider, CONVERSATION, None, FAST)
    assert failed.value.code == "MODEL_UNAVAILABLE"
    assert len(server.received) == FAST.max_retries + 1


async def test_without_a_script_the_server_answers_by_the_dev_rule(
    provider: ModelProvider, server: ModelServer
) -> None:
    ask = ModelRequest(
        model="any",
        messages=[MessageValue(role="user", content='call weather {"city": "Oslo"}')],
        tools=[WEATHER],
    )
    response = await provider.complete(ask)
    (call,) = response.tool_calls
    assert (call.name, call.arguments) == ("weather", {"city": "Oslo"})
    follow_up = ask.model_copy(
        update={
            "messages": [
                *ask.messages,
                MessageValue(role="assistant", tool_calls=[call]),
                MessageValue(role="tool", content="sunny", tool_call_id=call.id),
            ]
        }
    )
    deltas = Deltas()
    answer = await provider.complete(follow_up, deltas)
    assert answer.text == "tool weather returned: sunny"
    assert "".join(deltas.pieces) == answer.text
