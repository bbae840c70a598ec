"""Builds the aiohttp application from route modules, with the bearer-token rule of the server.

Each module in `ROUTE_MODULES` exposes `add_routes(app)`; its handlers are module-level functions that read
the daemon (a `MediaHub`) and its mixer from the application (`bridge.http.keys`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.http import api, api_controls, metrics, panel, signaling
from bridge.http.keys import HUB_KEY, MIXER_KEY

if TYPE_CHECKING:
    from bridge.runtime.daemon import Daemon

ROUTE_MODULES = (api_controls, api, signaling, panel, metrics)
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


async def health(request: web.Request) -> web.Response:
    """200 while every pipeline stage produces, 503 naming the stalled ones and since when (answered from
    memory, never waiting on the pipeline). Open without a token, so it says no more than stage names and
    times; why a sink failed is in /api/status."""
    report = request.app[HUB_KEY].health()
    stages = {name: {k: v for k, v in info.items() if k != "error"} for name, info in report["stages"].items()}
    stalled = [{k: v for k, v in info.items() if k != "error"} for info in report["stalled"]]
    body = {"ok": report["ok"], "running": report["running"], "stalled": stalled, "stages": stages}
    return web.json_response(body, status=200 if report["ok"] else 503)


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(middlewares=[token_middleware(daemon.config.http.token)], client_max_size=1 << 20)
    app[HUB_KEY] = daemon
    app[MIXER_KEY] = daemon.mixer
    app.router.add_get("/health", health)
    for module in ROUTE_MODULES:
        module.add_routes(app)
    return app
