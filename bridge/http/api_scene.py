"""HTTP routes of the scene around the avatar: which background shows, and who wants alpha.

GET  /api/scene                 {"background": "default", "backgrounds": [...], "alpha": {"wanted", "holders"}}
POST /api/scene/background      {"name": "office"}: switch to a background of the configured table

Both are also served per session under /api/sessions/<id>/scene….

The name is checked against the table before anything is read (a vocabulary: the network never names a file);
the file is loaded off the event loop. Like every state-changing route it goes through the request policy
(JSON body, the daemon's own origin or an allowed one, the token when set).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from bridge.core.errors import UserError
from bridge.http.responses import error, json_body
from bridge.http.scope import add_route, session_of

MAX_NAME = 64


async def scene(request: web.Request) -> web.Response:
    hub = session_of(request)
    demand = hub.alpha_demand
    return web.json_response({"background": hub.backgrounds.current, "backgrounds": hub.backgrounds.names(),
                              "alpha": {"wanted": demand.wanted, "holders": demand.holders()}})


async def background(request: web.Request) -> web.Response:
    hub = session_of(request)
    data = await json_body(request)
    name = data.get("name")
    names = hub.backgrounds.names()
    if not isinstance(name, str) or len(name) > MAX_NAME or name not in names:
        shown = repr(name)[:MAX_NAME]
        return error(400, f"no background named {shown}", f"send {{\"name\": one of {names}}}; add more under "
                     "[avatar.backgrounds] in the config")
    try:
        await asyncio.get_running_loop().run_in_executor(None, hub.backgrounds.select, name)
    except UserError as exc:
        return error(409, str(exc), "fix that entry of avatar.backgrounds and restart, or choose another")
    return web.json_response({"ok": True, "background": name})


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/api/scene", scene)
    add_route(app, "POST", "/api/scene/background", background)
