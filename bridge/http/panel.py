"""The web control panel: three static files served as they are (no build step), talking to the JSON API.

`/` redirects to `/panel/`. The pages hold no data and load without a token; the page takes a token it was
opened with (`#token=` or `?token=`) into the tab's session storage, removes it from the address bar, and sends
it as a bearer token on every API call. The server never puts a token into a page or a URL it sends back.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")
PAGES = {"panel.html": "text/html", "panel.js": "text/javascript", "panel.css": "text/css",
         "token.js": "text/javascript"}


async def root(_: web.Request) -> web.Response:
    raise web.HTTPFound("/panel/")  # a ?token= stays behind: the page reads it from the address it was given


async def page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "panel.html"
    if name not in PAGES:
        raise web.HTTPNotFound(text=f"no panel file {name!r}")
    return web.FileResponse(
        STATIC_DIR / name,
        headers={"Content-Type": PAGES[name], "Cache-Control": "no-cache"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/panel", root)
    app.router.add_get("/panel/", page)
    app.router.add_get("/panel/{name}", page)
