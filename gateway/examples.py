"""Example bodies of the API's answers, shown in the OpenAPI document (one per model)."""

from __future__ import annotations

from typing import Any

_AT = "2026-05-01T12:00:00Z"
_AGENT_ID = "0b6e2f0c-3c1e-4a35-9a0e-5d1f4c3b2a10"
_SESSION_ID = "4f1c9d2e-7b3a-4c5d-8e6f-a1b2c3d4e5f6"
_TURN_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"

TOOL: dict[str, Any] = {
    "tool_id": "5e0c1f2a-3b4c-5d6e-7f80-91a2b3c4d5e6",
    "name": "weather",
    "description": "Current weather for a city",
    "url": "https://tools.example.com/weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "timeout_s": 5.0,
    "secret_header_names": ["Authorization"],
}
# A tool's registration as a request body: ``PUT /v1/tools/{name}`` takes it as it is,
# ``POST /v1/tools`` with the name beside it.
TOOL_BODY: dict[str, Any] = {
    "description": "Current weather for a city",
    "url": "https://tools.example.com/weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "timeout_s": 5,
    "secret_headers": {"Authorization": "Bearer …"},
}
AGENT: dict[str, Any] = {
    "agent_id": _AGENT_ID,
    "version": 2,
    "status": "active",
    "name": "helper",
    "model": "dev",
    "system_prompt": "Be brief.",
    "tools": ["weather"],
    "max_steps": 8,
    "max_tool_calls": 16,
    "created_at": _AT,
    "updated_at": "2026-05-01T12:05:00Z",
}
AGENT_VERSION: dict[str, Any] = {
    "version": 2,
    "change": "updated",
    "changed": ["system_prompt"],
    "config": {"name": "helper", "model": "dev", "system_prompt": "Be brief."},
    "recorded_at": "2026-05-01T12:05:00Z",
}
SESSION: dict[str, Any] = {
    "session_id": _SESSION_ID,
    "agent_id": _AGENT_ID,
    "metadata": {"user": "u-42"},
    "created_at": _AT,
}
MESSAGE: dict[str, Any] = {
    "message_id": "3c2b1a09-8f7e-4d6c-9b5a-493827160504",
    "turn_id": _TURN_ID,
    "role": "assistant",
    "content": "Sunny in Oslo.",
    "tool_calls": [],
    "tool_call_id": None,
    "created_at": _AT,
}
STEP: dict[str, Any] = {
    "type": "agentlog.tool_call.completed.v1",
    "detail": {"tool_call_id": "call_1", "tool": "weather", "status_code": 200},
    "recorded_at": _AT,
}
TOOL_CALL: dict[str, Any] = {
    "tool_call_id": "call_1",
    "tool": "weather",
    "arguments": {"city": "Oslo"},
    "status": "completed",
    "code": None,
    "detail": None,
    "result": '{"forecast": "sunny"}',
}
TURN: dict[str, Any] = {
    "turn_id": _TURN_ID,
    "session_id": _SESSION_ID,
    "status": "completed",
    "mode": "chat",
    "request": 'call weather {"city": "Oslo"}',
    "answer": "Sunny in Oslo.",
    "error_code": None,
    "error_detail": None,
    "steps": 2,
    "input_tokens": 41,
    "output_tokens": 7,
    "requested_at": _AT,
    "finished_at": "2026-05-01T12:00:01Z",
    "links": {
        "self": f"/v1/turns/{_TURN_ID}",
        "stream": f"/v1/sessions/{_SESSION_ID}/stream",
        "messages": f"/v1/sessions/{_SESSION_ID}/messages",
        "cancel": f"/v1/turns/{_TURN_ID}/cancel",
    },
}
TURN_DETAIL: dict[str, Any] = {**TURN, "events": [STEP], "tool_calls": [TOOL_CALL]}
TENANT: dict[str, Any] = {
    "tenant_id": "8d6f2c1e-4b7a-4f0e-9c3d-2a1b5e7f9c40",
    "display_name": "acme",
    "created_at": _AT,
}
API_KEY: dict[str, Any] = {
    "key_id": "7d6c5b4a-3928-4716-a5b4-c3d2e1f0a9b8",
    "key_prefix": "al_Xy3k",
    "created_at": _AT,
    "revoked_at": None,
}
API_KEY_ISSUED: dict[str, Any] = {**API_KEY, "key": "al_Xy3k…"}
PAGE: dict[str, Any] = {
    "items": [SESSION],
    "next_cursor": "WyIyMDI2LTA1LTAxVDEyOjAwOjAwWiIsICI0ZjFjIl0=",
}

_TENANT_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
_INVOICE_ID = "2f4a6c8e-0b1d-4f3a-9c5e-7d9f1b3a5c7e"
PRICE_PLAN: dict[str, Any] = {
    "plan_id": "standard",
    "version": 2,
    "currency": "USD",
    "models": {
        "openai:gpt-4o-mini": {
            "input": "0.00000015",
            "output": "0.0000006",
            "cached_input": "0.000000075",
            "free_input_tokens": 100000,
            "free_output_tokens": 0,
            "free_cached_input_tokens": 0,
        }
    },
    "tools": {"weather": {"per_call": "0.001", "free_calls": 1000}},
    "monthly_minimum": "10",
    "published_at": _AT,
}
ASSIGNMENT: dict[str, Any] = {
    "tenant_id": _TENANT_ID,
    "plan_id": "standard",
    "version": 2,
    "effective_from": "2026-05-01T00:00:00Z",
    "assigned_at": _AT,
}
USAGE_RECORDED: dict[str, Any] = {"event_id": "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a"}
_LINE: dict[str, Any] = {
    "number": 1,
    "kind": "model",
    "resource": "openai:gpt-4o-mini",
    "unit": "input_tokens",
    "plan_id": "standard",
    "plan_version": 2,
    "window_start": "2026-05-01T00:00:00Z",
    "window_end": "2026-06-01T00:00:00Z",
    "quantity": 1250000,
    "free": 100000,
    "billable": 1150000,
    "unit_price": "0.00000015",
    "amount": "0.172500",
    "unpriced": False,
    "events": 412,
}
INVOICE: dict[str, Any] = {
    "invoice_id": _INVOICE_ID,
    "tenant_id": _TENANT_ID,
    "period": "2026-05",
    "currency": "USD",
    "revision": 2,
    "total": "10.00",
    "content_hash": "9f2c" + "0" * 60,
    "drafted_at": _AT,
    "revisions": [
        {
            "revision": 2,
            "request_id": "3e5d7f9b-1a2c-4e6a-8b0d-2f4e6a8c0e2a",
            "subtotal": "10.000000",
            "total": "10.00",
            "lines": [_LINE],
            "plans": [
                {
                    "plan_id": "standard",
                    "version": 2,
                    "start": "2026-05-01T00:00:00Z",
                    "end": "2026-06-01T00:00:00Z",
                }
            ],
            "offsets": {"0": 5120, "1": 4987, "2": 5301},
            "usage_events": 412,
            "content_hash": "9f2c" + "0" * 60,
            "changes": [],
            "drafted_at": _AT,
        }
    ],
}
DRAFT_REQUESTED: dict[str, Any] = {
    "request_id": "3e5d7f9b-1a2c-4e6a-8b0d-2f4e6a8c0e2a",
    "invoice_id": _INVOICE_ID,
    "status": "requested",
}
REPLAY: dict[str, Any] = {
    "replay_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
    "name": "billing",
    "swap": False,
    "status": "succeeded",
    "records_read": 1000250,
    "records_total": 1000250,
    "records_per_second": 21436.2,
    "seconds_left": 0.0,
    "events_applied": 1000000,
    "seconds": 61.4,
    "swapped_to": None,
    "differences": None,
    "lines": ["rebuild: 11 tables verified identical at the live position in 0.4 s"],
    "started_by": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
    "started_at": _AT,
    "finished_at": _AT,
}
