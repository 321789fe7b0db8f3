"""Who may open the dashboard: an operator, by key or by this deployment's session
cookie, checked on every request."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from redis.exceptions import RedisError

from schemas.errors import ErrorCode

from ...auth import bearer_key
from ...connections import Gateway
from ...dashboard_store import DashboardStore
from ...deps import GatewayDep
from ...problems import ProblemError


class LoginRequiredError(Exception):
    """A page asked for without a session: the login page, then back. ``ended``: a
    session cookie came, but its session is over."""

    def __init__(self, ended: bool) -> None:
        super().__init__()
        self.ended = ended


async def store(request: Request) -> DashboardStore:
    return cast(DashboardStore, request.app.state.dashboard_store)


StoreDep = Annotated[DashboardStore, Depends(store)]


def unavailable(exc: RedisError) -> ProblemError:
    return ProblemError(
        ErrorCode.UNAVAILABLE, f"sessions: {type(exc).__name__}", headers={"Retry-After": "1"}
    )


async def operator_of(request: Request, gw: Gateway, sessions: DashboardStore) -> str | None:
    """The operator signing the request (key or session cookie), None if nobody is."""
    key = bearer_key(request.headers.get("authorization", ""))
    if key is not None:
        caller = await gw.keys.caller_for(key)
        if caller is None:
            raise ProblemError(ErrorCode.UNAUTHENTICATED, "unknown API key")
        if caller.operator_id is None:
            raise ProblemError(ErrorCode.OPERATOR_REQUIRED, "the dashboard is for operators")
        return caller.operator_id
    token = request.cookies.get(sessions.cookie)
    if not token:
        return None
    try:
        return await sessions.session_operator(token)
    except RedisError as exc:
        raise unavailable(exc) from None


async def page_operator(request: Request, gw: GatewayDep, sessions: StoreDep) -> str:
    operator = await operator_of(request, gw, sessions)
    if operator is None:
        raise LoginRequiredError(ended=sessions.cookie in request.cookies)
    return operator


async def data_operator(request: Request, gw: GatewayDep, sessions: StoreDep) -> str:
    operator = await operator_of(request, gw, sessions)
    if operator is None:
        raise ProblemError(ErrorCode.UNAUTHENTICATED, "sign in, or send an operator's key")
    return operator


PageOperator = Annotated[str, Depends(page_operator)]
DataOperator = Annotated[str, Depends(data_operator)]


def require_dashboard_header(request: Request) -> None:
    """A change made with the session cookie must carry ``X-Agentlog-Dashboard: 1``,
    which a form or page of another site cannot send."""
    if bearer_key(request.headers.get("authorization", "")) is None and (
        request.headers.get("x-agentlog-dashboard") != "1"
    ):
        raise ProblemError(ErrorCode.DASHBOARD_HEADER_REQUIRED, "send X-Agentlog-Dashboard: 1")


async def on_login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequiredError)
    query = f"?{request.url.query}" if request.url.query else ""
    target = {"next": request.url.path + query}
    if exc.ended:
        target["error"] = "session-ended"
    response = RedirectResponse(
        f"/dashboard/login?{urllib.parse.urlencode(target, safe='/')}", status_code=303
    )
    if exc.ended:
        response.delete_cookie((await store(request)).cookie, path="/dashboard")
    return response
