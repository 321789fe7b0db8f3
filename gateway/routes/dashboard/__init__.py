"""The operators' dashboard at ``/dashboard``: server-rendered pages (Jinja2), kept live
over server-sent events, on the read models and the cluster's offsets. One module per
page; who may open them is ``access``, the page templates ``rendering``.

An operator signs in with an operator key: as ``Authorization: Bearer alop_…`` on each
request, or once on the login page, which sets a session cookie (HttpOnly, SameSite
Strict, 12 hours; the session lives in Redis, in this deployment's keys, so every
gateway of the deployment knows it and signing out ends it everywhere). A tenant's key
gets 403. State-changing requests made with the cookie must carry
``X-Agentlog-Dashboard: 1``, which a page of another site cannot set.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import dead_letters, login, overview, pipeline, tenants, turns
from .access import LoginRequiredError, on_login_required

PAGES = (login, overview, pipeline, turns, dead_letters, tenants)
STATIC = StaticFiles(directory=Path(__file__).parent.parent.parent / "static")


def mount(app: FastAPI) -> None:
    """The dashboard's routes, its static files and its sign-in redirect, on ``app``
    (whose ``state.dashboard_store`` is the dashboard's ``DashboardStore``)."""
    for page in PAGES:
        app.include_router(
            page.router, prefix="/dashboard", tags=["dashboard"], include_in_schema=False
        )
    app.mount("/dashboard/static", STATIC, name="dashboard-static")
    app.add_exception_handler(LoginRequiredError, on_login_required)
