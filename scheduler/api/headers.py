"""Security headers on every answer: ``X-Content-Type-Options: nosniff`` everywhere, and a Content Security
Policy that forbids framing (``frame-ancestors 'none'``) on every page, not only ``/console``: the console's
static files (its ``index.html`` too), ``/docs`` and ``/redoc``, and the JSON answers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from scheduler.api.errors import error_response
from scheduler.console import CSP as CONSOLE_CSP

#: Swagger UI and ReDoc (served from the package) start from inline scripts and ReDoc runs a blob worker;
#: nothing may come from elsewhere and no one may frame them.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'; object-src 'none'"
)
#: Everything else (JSON, CSV, metrics): nothing to load, nothing to frame.
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"


def secure(headers: MutableHeaders, path: str) -> None:
    """Set the security headers ``headers`` lacks, for an answer on ``path``."""
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if path.startswith("/console"):
        csp = CONSOLE_CSP
    elif headers.get("content-type", "").startswith("text/html"):
        csp = DOCS_CSP
    else:
        csp = DATA_CSP
    headers.setdefault("Content-Security-Policy", csp)


def add_server_error_handler(app: Starlette) -> None:
    """An unhandled exception answers 500 in the API's error shape with the security headers: Starlette's
    ServerErrorMiddleware, outside every middleware, sends it (then re-raises it, so it is logged)."""

    async def _server_error(request: Request, _: Exception) -> Response:
        response = error_response(500, "internal_error", "internal error (the server log has the details)", None)
        secure(response.headers, request.url.path)
        return response

    app.add_exception_handler(Exception, _server_error)


class SecurityHeaders:
    """Adds the headers an answer does not set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def with_headers(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                secure(MutableHeaders(scope=message), path)
            await send(message)

        await self.app(scope, receive, with_headers)
