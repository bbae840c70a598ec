"""Builds the aiohttp application from route modules, with the bearer-token rule of the server.

Each module in `ROUTE_MODULES` exposes `setup(app: web.Application, daemon: Daemon) -> None`.
"""

from __future__ import annotations

import hmac
import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bridge.runtime.daemon import Daemon

ROUTE_MODULES = (
    "bridge.http.api_controls",
    "bridge.http.api",
    "bridge.http.signaling",
    "bridge.http.panel",
    "bridge.http.metrics",
)

DAEMON_KEY: web.AppKey[Any] = web.AppKey("daemon", object)
OPEN_PATHS = ("/health",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_middleware(token: str | None) -> Any:
    """Require `Authorization: Bearer <token>` (or `?token=` for the panel page) on every path but health."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or request.path in OPEN_PATHS or request.method == "OPTIONS":
            return await handler(request)
        given = request.headers.get("Authorization", "")
        supplied = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            return web.json_response(
                {"error": "missing or wrong bearer token", "fix": "send 'Authorization: Bearer <http.token>'"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return check


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(middlewares=[token_middleware(daemon.config.http.token)], client_max_size=1 << 20)
    app[DAEMON_KEY] = daemon

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "running": daemon.running})

    app.router.add_get("/health", health)
    for name in ROUTE_MODULES:
        importlib.import_module(name).setup(app, daemon)
    return app
