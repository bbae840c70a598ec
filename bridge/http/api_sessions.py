"""Creating, listing and ending sessions (one avatar each) over the JSON API.

POST   /api/sessions          {"avatar", "face", "audio", "width", "height", "fps", "idle", "record"}, every
                              field optional (the daemon's config fills the rest) → 201 {"id", "whep", "api"};
                              503 with Retry-After when the daemon is at its capacity, 409 when it records
                              as many sessions as sessions.max_recordings allows
GET    /api/sessions          every session with its frame counters and viewers, the capacity
GET    /api/sessions/<id>     one session
DELETE /api/sessions/<id>     end it, its recording finalised (the default and the config's fixed sessions
                              are not ended here)

The id is random and unguessable: whoever created the session holds it. Every single-avatar route is also
served under /api/sessions/<id>/… and /sessions/<id>/whep (`bridge.http.scope`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bridge.core.config import SessionSpec
from bridge.core.errors import UserError
from bridge.http.api_recording import refused_recording
from bridge.http.keys import HOST_KEY
from bridge.http.responses import error, json_body
from bridge.http.scope import session_of
from bridge.runtime.recordings import RecordingRefused
from bridge.runtime.session import Session
from bridge.runtime.sessions import SessionsFull

SPEC_FIX = ('send a JSON object with any of avatar ("demo", "flashavatar"), face ("procedural", "diffposetalk"), '
            'audio ("file", "microphone", "webrtc", "silence"), width, height, fps (25, 30, 60), idle (true/false), '
            'record (true/false: the daemon names the file)')


def _links(session: Session) -> dict[str, Any]:
    return {"id": session.name, "api": f"/api/sessions/{session.name}", "whep": f"/sessions/{session.name}/whep"}


def spec_of(body: dict[str, Any]) -> SessionSpec:
    """A creation's body as a session spec; ValueError naming the first thing wrong."""
    if "name" in body:
        raise ValueError("'name' is not taken: a created session gets a random id (fixed names are declared in "
                         "the config's [[sessions.fixed]])")
    try:
        return SessionSpec.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValueError(f"{where}: {first['msg']}") from None


def refused_for_capacity(exc: SessionsFull) -> web.Response:
    """503 with Retry-After: no room now, and when to ask again."""
    refused = error(503, str(exc), f"try again in {exc.retry_after} s, end a session (DELETE /api/sessions/<id>), "
                    "or add a worker (docs/sessions.md)")
    refused.headers["Retry-After"] = str(exc.retry_after)
    return refused


async def create(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    try:
        spec = spec_of(await json_body(request))
    except ValueError as exc:
        return error(400, str(exc), SPEC_FIX)
    try:
        session = await host.create_session(spec)
    except SessionsFull as exc:
        return refused_for_capacity(exc)
    except RecordingRefused as exc:
        return refused_recording(exc)
    except UserError as exc:
        return error(400, str(exc), SPEC_FIX)
    return web.json_response({**_links(session), **session.describe()}, status=201,
                             headers={"Location": f"/api/sessions/{session.name}"})


async def listing(request: web.Request) -> web.Response:
    return web.json_response(request.app[HOST_KEY].sessions.describe())


async def one(request: web.Request) -> web.Response:
    session = session_of(request)
    return web.json_response({**_links(session), **session.describe()})


async def end(request: web.Request) -> web.Response:
    session = session_of(request)
    if session.fixed:
        return error(409, f"session {session.name!r} is declared by the daemon's config and runs as long as it does",
                     "end only sessions created with POST /api/sessions")
    await request.app[HOST_KEY].end_session(session.name)
    return web.json_response({"ended": session.name, "recording": session.recording_status()})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/sessions", create)
    app.router.add_get("/api/sessions", listing)
    app.router.add_get("/api/sessions/{session}", one)
    app.router.add_delete("/api/sessions/{session}", end)
