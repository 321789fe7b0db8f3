"""The OpenAPI document: each operation's summary and description, answers that are
not JSON and problem details declared with the media types they are sent with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from schemas.errors import ErrorCode


def documented(
    summary: str,
    description: str,
    *,
    records: str | None = None,
    problems: Sequence[ErrorCode] = (),
) -> dict[str, Any]:
    """A route's ``summary`` and ``description``: what it does, what it records on which
    topic, and the problem codes particular to it (every route may also answer the
    common ones: ``UNAUTHENTICATED``, ``BODY_TOO_LARGE``, ``UNAVAILABLE``, …)."""
    text = description.strip()
    if records:
        text += f"\n\n**Records** {records}."
    if problems:
        text += "\n\n**Problems:** " + ", ".join(f"`{code}`" for code in problems) + "."
    return {"summary": summary, "description": text}


def sent_as(description: str, content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A route whose answer is not JSON (a file, a stream): its success declared with
    the media types it is sent in, ``content`` (media type → its OpenAPI media type
    object), and those only; FastAPI would declare ``application/json`` too."""
    return {
        "response_class": Response,  # no media type of its own to declare
        "responses": {200: {"description": description, "content": content}},
    }


def serve_problems_as_problem_json(app: FastAPI) -> None:
    """Declare error responses in the OpenAPI document with the media type they are
    sent with (FastAPI would say application/json)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operations in generate()["paths"].values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status in ("4XX", "5XX") and content:
                            # Whatever the route's own media type, its errors are these.
                            response["content"] = {
                                "application/problem+json": next(iter(content.values()))
                            }
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
