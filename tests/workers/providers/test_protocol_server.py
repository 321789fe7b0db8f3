"""The model server over plain HTTP, as the providers' own SDKs call it.

Both protocols answer one JSON body unless the request asks for ``stream``, so a plain
non-streaming SDK call works; scripted replies, errors and stalls apply either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from schemas.events import ToolCallValue, UsageValue
from workers.providers.protocol_server import ModelServer, Reply

PROTOCOLS = ["openai", "anthropic"]


@pytest.fixture
def server() -> Iterator[ModelServer]:
    """A server per test: what one test scripted never answers another."""
    running = ModelServer().start()
    yield running
    running.stop()


def post(server: ModelServer, protocol: str, text: str, **extra: Any) -> httpx.Response:
    """One user message to the protocol's endpoint, with ``extra`` fields in the body."""
    body: dict[str, Any] = {
        "model": "m-1",
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    if protocol == "openai":
        return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=5)
    return httpx.post(f"{server.url}/v1/messages", json={"max_tokens": 64, **body}, timeout=5)


@pytest.mark.parametrize("stream", [{}, {"stream": False}], ids=["absent", "false"])
def test_openai_answers_text_as_one_completion(server: ModelServer, stream: dict[str, Any]) -> None:
    response = post(server, "openai", "hello there", **stream)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 0,
        "model": "m-1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo: hello there"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 2,
            "completion_tokens": 3,
            "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


@pytest.mark.parametrize("stream", [{}, {"stream": False}], ids=["absent", "false"])
def test_anthropic_answers_text_as_one_message(server: ModelServer, stream: dict[str, Any]) -> None:
    response = post(server, "anthropic", "hello there", **stream)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "id": "msg_local",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [{"type": "text", "text": "echo: hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 2, "cache_read_input_tokens": 0, "output_tokens": 3},
    }


def test_openai_answers_a_tool_call_as_one_completion(server: ModelServer) -> None:
    body = post(server, "openai", 'call weather {"city": "Oslo"}').json()
    (choice,) = body["choices"]
    (call,) = choice["message"]["tool_calls"]
    assert choice == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": "weather", "arguments": call["function"]["arguments"]},
                }
            ],
        },
        "finish_reason": "tool_calls",
    }
    assert call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert body["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 1,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_anthropic_answers_a_tool_call_as_one_message(server: ModelServer) -> None:
    body = post(server, "anthropic", 'call weather {"city": "Oslo"}').json()
    (block,) = body["content"]
    assert block == {
        "type": "tool_use",
        "id": block["id"],
        "name": "weather",
        "input": {"city": "Oslo"},
    }
    assert block["id"].startswith("call_")
    assert (body["stop_reason"], body["stop_sequence"]) == ("tool_use", None)
    assert body["usage"] == {"input_tokens": 4, "cache_read_input_tokens": 0, "output_tokens": 1}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_scripted_reply_answers_a_non_streamed_call(server: ModelServer, protocol: str) -> None:
    server.script(
        Reply(
            chunks=("Sun", "ny."),
            tool_calls=(ToolCallValue(id="t1", name="clock", arguments={"tz": "UTC"}),),
            usage=UsageValue(input_tokens=42, output_tokens=7, cached_input_tokens=10),
        )
    )
    body = post(server, protocol, "ignored").json()
    if protocol == "openai":
        message = body["choices"][0]["message"]
        assert message["content"] == "Sunny."
        assert message["tool_calls"] == [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "clock", "arguments": '{"tz": "UTC"}'},
            }
        ]
        assert body["usage"] == {
            "prompt_tokens": 42,
            "completion_tokens": 7,
            "total_tokens": 49,
            "prompt_tokens_details": {"cached_tokens": 10},
        }
    else:
        assert body["content"] == [
            {"type": "text", "text": "Sunny."},
            {"type": "tool_use", "id": "t1", "name": "clock", "input": {"tz": "UTC"}},
        ]
        assert body["usage"] == {
            "input_tokens": 32,
            "cache_read_input_tokens": 10,
            "output_tokens": 7,
        }


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("protocol", "error"),
    [
        (
            "openai",
            {
                "error": {
                    "message": "scripted failure with HTTP 429",
                    "type": "server_error",
                    "code": 429,
                }
            },
        ),
        (
            "anthropic",
            {
                "type": "error",
                "error": {"type": "rate_limit_error", "message": "scripted failure with HTTP 429"},
            },
        ),
    ],
)
def test_a_scripted_error_is_the_same_in_both_modes(
    server: ModelServer, protocol: str, error: dict[str, Any], stream: bool
) -> None:
    server.script(Reply(status=429, retry_after=1.5))
    response = post(server, protocol, "hello", stream=stream)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    assert response.json() == error


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_scripted_stall_delays_a_non_streamed_answer(server: ModelServer, protocol: str) -> None:
    server.script(Reply(chunks=("late",), stall_s=0.3))
    started = time.monotonic()
    response = post(server, protocol, "hello")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("protocol", "last"), [("openai", "[DONE]"), ("anthropic", "message_stop")]
)
def test_stream_true_still_streams(server: ModelServer, protocol: str, last: str) -> None:
    response = post(server, protocol, "hello there", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert last in data[-1]
