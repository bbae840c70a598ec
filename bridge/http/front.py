"""The supervisor's HTTP front (`avatar-bridge workers`): where clients create, list and end sessions when
they run on several worker processes. The same request policy as a daemon's API; a created session is
answered with where it lives (its worker's API and WHEP URLs), and a session whose worker died is answered
with 410 and why.

GET    /health               200 while every worker runs, 503 otherwise (no token needed)
POST   /api/sessions         the daemon's session spec (checked here, then on the worker) → 201 placement;
                             503 when no worker has room, 409 when those with room record all they may
GET    /api/sessions         workers (with their load) and placements
GET    /api/sessions/<id>    one placement, or 410 {"error"} when its worker died
DELETE /api/sessions/<id>    end it on its worker
"""

from __future__ import annotations

from aiohttp import web

from bridge.core.config import HttpConfig
from bridge.core.errors import UserError
from bridge.http.api_recording import refused_recording
from bridge.http.api_sessions import SPEC_FIX, refused_for_capacity, spec_of
from bridge.http.policy import PolicySettings, request_policy
from bridge.http.responses import error, json_body
from bridge.runtime.recordings import RecordingRefused
from bridge.runtime.sessions import SessionsFull
from bridge.runtime.workers import Supervisor

SUPERVISOR_KEY: web.AppKey[Supervisor] = web.AppKey("supervisor", Supervisor)


async def create(request: web.Request) -> web.Response:
    try:
        spec = spec_of(await json_body(request))
    except ValueError as exc:
        return error(400, str(exc), SPEC_FIX)
    try:
        placement = await request.app[SUPERVISOR_KEY].create_session(spec.model_dump(exclude_none=True))
    except SessionsFull as exc:
        return refused_for_capacity(exc)
    except RecordingRefused as exc:
        return refused_recording(exc)
    except UserError as exc:
        return error(400, str(exc), SPEC_FIX)
    return web.json_response(placement.describe(), status=201, headers={"Location": f"/api/sessions/{placement.session}"})


async def listing(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR_KEY]
    await supervisor.refresh()
    return web.json_response(supervisor.describe())


async def one(request: web.Request) -> web.Response:
    supervisor = request.app[SUPERVISOR_KEY]
    name = request.match_info["session"]
    placement = supervisor.placements.get(name)
    if placement is not None:
        return web.json_response(placement.describe())
    why = supervisor.ended.get(name)
    if why is not None:
        return error(410, f"the session ended: {why}", "create a new session (POST /api/sessions)")
    return error(404, "no such session", "it has ended, or the id is wrong; list them with GET /api/sessions")


async def end(request: web.Request) -> web.Response:
    name = request.match_info["session"]
    if not await request.app[SUPERVISOR_KEY].end_session(name):
        return error(404, "no such session", "it has ended, or the id is wrong; list them with GET /api/sessions")
    return web.json_response({"ended": name})


async def health(request: web.Request) -> web.Response:
    """200 while every worker runs, 503 with how many do (for the supervisor's own supervisor; no token)."""
    workers = request.app[SUPERVISOR_KEY].workers
    alive = sum(1 for w in workers if w.alive)
    return web.json_response({"ok": alive == len(workers), "workers": len(workers), "alive": alive},
                             status=200 if alive == len(workers) else 503)


def build_front(supervisor: Supervisor, http: HttpConfig) -> web.Application:
    app = web.Application(middlewares=[request_policy(PolicySettings.from_config(http))], client_max_size=1 << 20)
    app[SUPERVISOR_KEY] = supervisor
    app.router.add_get("/health", health)
    app.router.add_post("/api/sessions", create)
    app.router.add_get("/api/sessions", listing)
    app.router.add_get("/api/sessions/{session}", one)
    app.router.add_delete("/api/sessions/{session}", end)
    return app
