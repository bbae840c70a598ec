"""Which session a request is for. Every single-avatar route is served twice: as it always was, for the
default session (`/api/state`, `/whep`), and under a session's name (`/api/sessions/<id>/state`,
`/sessions/<id>/whep`). The name is looked up in the daemon's registry before anything uses it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.http.keys import HOST_KEY
from bridge.http.responses import fail
from bridge.runtime.session import Session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION = "session"  # the path parameter that names a session


def session_of(request: web.Request) -> Session:
    """The session the request's path names (the default one on the single-avatar paths); 404 otherwise."""
    host = request.app[HOST_KEY]
    name = request.match_info.get(SESSION)
    if name is None:
        return host.session
    found = host.sessions.get(name)
    if found is None:
        raise fail(404, "no such session", "it has ended, or the id is wrong; list them with GET /api/sessions")
    return found


def session_path(path: str) -> str:
    """Where a single-avatar route lives for one session: /api/x → /api/sessions/{session}/x, /y → /sessions/{session}/y."""
    if path.startswith("/api/"):
        return "/api/sessions/{" + SESSION + "}/" + path[len("/api/"):]
    return "/sessions/{" + SESSION + "}" + path


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Serve `handler` at `path` for the default session and at its session path for every session."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, session_path(path), handler)
