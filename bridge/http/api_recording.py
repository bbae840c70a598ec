"""Recording a session over the JSON API, in the style of mute and freeze: a route with the state to read and
a POST with the state wanted.

GET  /api/record                       whether the default session records, its file's name, frames, error
POST /api/record {"recording": true}   start (a new file in sessions.record_dir, named by the daemon);
                 {"recording": false}  stop and finalise the file; both answer the recording's state
and the same for any session under /api/sessions/<id>/record.

A body names no file and no folder: anything beside "recording" is refused, so a page cannot steer where the
daemon writes. Starting past `sessions.max_recordings` is a 409 saying so.
"""

from __future__ import annotations

from aiohttp import web

from bridge.core.errors import UserError
from bridge.http.keys import HOST_KEY
from bridge.http.responses import error, json_body
from bridge.http.scope import add_route, session_of
from bridge.runtime.recordings import RecordingRefused

BODY_FIX = '{"recording": true} to start, {"recording": false} to stop; the daemon names the file'
LIMIT_FIX = ("stop another session's recording (POST /api/sessions/<id>/record {\"recording\": false}) or raise "
             "sessions.max_recordings in the daemon's config")


def refused_recording(exc: RecordingRefused) -> web.Response:
    """409: as many sessions record as the config allows (or this one's recording is starting)."""
    return error(409, str(exc), LIMIT_FIX)


async def recording(request: web.Request) -> web.Response:
    return web.json_response(session_of(request).recording_status())


async def record(request: web.Request) -> web.Response:
    session = session_of(request)
    body = await json_body(request)
    wanted = body.get("recording")
    extra = sorted(set(body) - {"recording"})
    if extra:
        return error(400, f"unknown field(s) {extra}: a recording's folder and name are the daemon's", BODY_FIX)
    if not isinstance(wanted, bool):
        return error(400, f"'recording' must be true or false, got {wanted!r}", BODY_FIX)
    recorders = request.app[HOST_KEY].recordings
    try:
        if wanted:
            await recorders.start(session)
        else:
            await recorders.stop(session)
    except RecordingRefused as exc:
        return refused_recording(exc)
    except UserError as exc:
        return error(400, str(exc), "set sessions.record_dir to a writable folder with free space")
    return web.json_response(session.recording_status())


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/api/record", recording)
    add_route(app, "POST", "/api/record", record)
