"""Headers that keep a browser safe on the gateway's pages (the dashboard, the API's
docs, the AsyncAPI page): a Content-Security-Policy that loads nothing from another
origin and runs no inline script, no framing (clickjacking), no content sniffing, and
no referrer sent with a link out (a dashboard URL names tenants and turns).

One ASGI layer, applied by path so the API's requests skip it. The dashboard's own
pages need no inline script or style; Swagger UI and Redoc set inline styles and Redoc
searches in a worker it makes from a ``blob:``, so the docs' policy allows those.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:;"
    " font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
DASHBOARD_POLICY = f"{_COMMON}; style-src 'self'"
DOCS_POLICY = f"{_COMMON}; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
_POLICIES = (
    ("/dashboard", DASHBOARD_POLICY),
    ("/docs", DOCS_POLICY),
    ("/redoc", DOCS_POLICY),
    ("/asyncapi", DOCS_POLICY),
)


def policy_for(path: str) -> str | None:
    """The Content-Security-Policy of a page's path, None for the API's."""
    return next(
        (
            policy
            for prefix, policy in _POLICIES
            if path == prefix or path.startswith((prefix + "/", prefix + "."))
        ),
        None,
    )


class PageHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = policy_for(scope["path"]) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = policy
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        await self.app(scope, receive, send_with_headers)
