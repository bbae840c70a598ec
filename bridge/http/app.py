"""Builds the aiohttp application from route modules behind the request policy (`bridge.http.policy`).

Each module in `ROUTE_MODULES` exposes `add_routes(app)`; its handlers are module-level functions that find
the session a request is for with `bridge.http.scope.session_of` (the daemon is on the application).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bridge.http import api, api_controls, api_recording, api_scene, api_sessions, metrics, panel, signaling
from bridge.http.keys import HOST_KEY
from bridge.http.policy import PolicySettings, request_policy

if TYPE_CHECKING:
    from bridge.runtime.daemon import Daemon

ROUTE_MODULES = (api_controls, api, api_scene, api_recording, api_sessions, signaling, panel, metrics)


async def health(request: web.Request) -> web.Response:
    """200 while every pipeline stage produces, 503 naming the stalled ones and since when (answered from
    memory, never waiting on the pipeline). Open without a token, so it says no more than stage names and
    times; why a sink failed is in /api/status."""
    report = request.app[HOST_KEY].health()
    stages = {name: {k: v for k, v in info.items() if k != "error"} for name, info in report["stages"].items()}
    stalled = [{k: v for k, v in info.items() if k != "error"} for info in report["stalled"]]
    body = {"ok": report["ok"], "running": report["running"], "stalled": stalled, "stages": stages}
    return web.json_response(body, status=200 if report["ok"] else 503)


def build_app(daemon: Daemon) -> web.Application:
    settings = PolicySettings.from_config(daemon.config.http)
    app = web.Application(middlewares=[request_policy(settings, daemon.stats.incr)], client_max_size=1 << 20)
    app[HOST_KEY] = daemon
    app.router.add_get("/health", health)
    for module in ROUTE_MODULES:
        module.add_routes(app)
    return app
