"""Signing in and out. The login page shows one of a fixed set of messages, named by
a code (``?error=``): text in a link is never shown as if the dashboard said it."""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from redis.exceptions import RedisError

from ...dashboard_store import SESSION_S
from ...deps import GatewayDep
from .access import StoreDep, unavailable
from .rendering import render

router = APIRouter()
MESSAGES = {
    "unknown-key": "Unknown key.",
    "not-operator": "That is not an operator's key.",
    "session-ended": "Your session has ended: sign in again.",
}


def _login_page(target: str, error: str) -> HTMLResponse:
    return render("login.html", next=target, error=MESSAGES.get(error, ""), page="login")


@router.get("/login")
async def login_page(next: str = "/dashboard", error: str = "") -> HTMLResponse:
    return _login_page(_local(next), error)


@router.post("/login")
async def login(request: Request, gw: GatewayDep, sessions: StoreDep) -> Response:
    form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
    key = form.get("key", [""])[0].strip()
    target = _local(form.get("next", ["/dashboard"])[0])
    caller = await gw.keys.caller_for(key) if key else None
    if caller is None or caller.operator_id is None:
        return _login_page(target, "not-operator" if caller else "unknown-key")
    try:
        token = await sessions.open_session(caller.operator_id)
    except RedisError as exc:
        raise unavailable(exc) from None
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        sessions.cookie,
        token,
        max_age=SESSION_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, sessions: StoreDep) -> Response:
    token = request.cookies.get(sessions.cookie)
    if token:
        try:
            await sessions.end_session(token)
        except RedisError as exc:
            raise unavailable(exc) from None
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(sessions.cookie, path="/dashboard")
    return response


def _local(target: str) -> str:
    """``target`` if it is a path of the dashboard (no open redirect), else its home."""
    return target if target.startswith("/dashboard") and "//" not in target else "/dashboard"
