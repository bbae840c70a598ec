"""The web control panel: three static files served as they are (no build step), talking to the JSON API.

`/` redirects to `/panel/`; the page keeps a `?token=` it was opened with and sends it as a bearer token on
every API call, so the same token rule protects the panel and the API when the server is bound wide.
"""

from __future__ import annotations

from html import escape as html_escape
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")
PAGES = {"panel.html": "text/html", "panel.js": "text/javascript", "panel.css": "text/css"}


async def root(request: web.Request) -> web.Response:
    query = f"?{request.query_string}" if request.query_string else ""
    raise web.HTTPFound(f"/panel/{query}")


async def page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "panel.html"
    if name not in PAGES:
        raise web.HTTPNotFound(text=f"no panel file {name!r}")
    if name == "panel.html":
        # The page's own script and style requests carry the token it was opened with.
        token = request.query.get("token", "")
        suffix = "?" + urlencode({"token": token}) if token else ""
        html = (STATIC_DIR / name).read_text(encoding="utf-8").replace("{{asset_query}}", html_escape(suffix))
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})
    return web.FileResponse(
        STATIC_DIR / name,
        headers={"Content-Type": PAGES[name], "Cache-Control": "no-cache"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/panel", root)
    app.router.add_get("/panel/", page)
    app.router.add_get("/panel/{name}", page)
