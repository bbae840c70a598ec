"""Builds the aiohttp application from route modules behind the request policy (`bridge.http.policy`).

Each module in `ROUTE_MODULES` exposes `add_routes(app)`; its handlers are module-level functions that read
the daemon (a `MediaHub`) and its mixer from the application (`bridge.http.keys`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bridge.core.errors import UserError
from bridge.http import api, api_controls, metrics, panel, signaling
from bridge.http.keys import HUB_KEY, MIXER_KEY
from bridge.http.policy import PolicySettings, request_policy

if TYPE_CHECKING:
    from bridge.runtime.daemon import Daemon

ROUTE_MODULES = (api_controls, api, signaling, panel, metrics)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "running": request.app[HUB_KEY].running})


def build_app(daemon: Daemon) -> web.Application:
    try:
        settings = PolicySettings.from_config(daemon.config.http)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    app = web.Application(middlewares=[request_policy(settings, daemon.stats.incr)], client_max_size=1 << 20)
    app[HUB_KEY] = daemon
    app[MIXER_KEY] = daemon.mixer
    app.router.add_get("/health", health)
    for module in ROUTE_MODULES:
        module.add_routes(app)
    return app
