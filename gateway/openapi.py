"""The OpenAPI document: each operation's summary and description, and problem details
declared with the media type they are sent with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

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
