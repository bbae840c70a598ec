"""HTTP routes of the controls: state, vocabulary, control events, presets, MIDI learn.

Each of state, controls, control and presets is also served per session under /api/sessions/<id>/…

GET  /api/state                 mixer state ("manual", "mixed", counters) + control surfaces' counters
GET  /api/controls              the control vocabulary (targets, ARKit names, presets, emotions)
POST /api/control               {"target": "blend/jawOpen", "values": [0.7]}  (values: a number or a list)
GET  /api/presets               presets and emotions with their contents and load errors
POST /api/presets/apply         {"name": "smile", "kind": "preset" | "emotion", "value": 1, "fade": 0.4}
POST /api/presets/capture       {"name": "my_look"}: saves what the controls currently add to the face
POST /api/presets/reload        re-read the presets files now (they also reload on change by themselves)
GET  /api/midi                  MIDI ports, errors and learn status
POST /api/midi/learn/start      {"target": "blend/browInnerUp"} (or no target: then /assign after moving)
POST /api/midi/learn/assign     {"target": "..."}: bind the control moved last
POST /api/midi/learn/stop
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from bridge.controls.commands import ControlError, command_target
from bridge.controls.mixer import Mixer
from bridge.controls.presets import PresetError
from bridge.controls.vocabulary import vocabulary
from bridge.core.interfaces import ControlEvent
from bridge.http.keys import HOST_KEY
from bridge.http.responses import error, fail, json_body
from bridge.http.scope import add_route, session_of
from drivers.control.midi import MidiControlSurface


def _values(raw: Any) -> tuple[float, ...] | None:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > 8:
        return None
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            return None
        out.append(float(v))
    return tuple(out)


def _send(mixer: Mixer, target: str, values: tuple[float, ...]) -> web.Response:
    try:
        cmd = mixer.accept(ControlEvent(target, values, source="http"))
    except ControlError as exc:
        return error(400, str(exc), "see GET /api/controls for the targets and their values")
    return web.json_response({"ok": True, "target": command_target(cmd), "values": list(values)})


def _midi(request: web.Request) -> MidiControlSurface:
    surface = request.app[HOST_KEY].surface("midi")
    if not isinstance(surface, MidiControlSurface):
        raise fail(409, "MIDI input is not running", "set midi.enabled = true and restart")
    return surface


async def state(request: web.Request) -> web.Response:
    body = session_of(request).mixer.state()
    body["surfaces"] = {s.name: s.status() for s in request.app[HOST_KEY].control_surfaces}
    return web.json_response(body)


async def controls(request: web.Request) -> web.Response:
    mixer = session_of(request).mixer
    lib = mixer.library
    body = vocabulary(lib.names("preset"), lib.names("emotion"))
    body["avatar_map"] = mixer.arkit.to_json()
    return web.json_response(body)


async def control(request: web.Request) -> web.Response:
    data = await json_body(request)
    target = data.get("target")
    values = _values(data.get("values"))
    if not isinstance(target, str) or values is None:
        return error(400, "give 'target' (a string) and 'values' (a finite number or a list of up to 8)",
                     'e.g. {"target": "blend/jawOpen", "values": [0.7]}')
    return _send(session_of(request).mixer, target, values)


async def presets(request: web.Request) -> web.Response:
    return web.json_response(session_of(request).mixer.library.to_json())


async def apply_preset(request: web.Request) -> web.Response:
    data = await json_body(request)
    name, kind = data.get("name"), data.get("kind", "preset")
    if not isinstance(name, str) or kind not in ("preset", "emotion"):
        return error(400, "give 'name' and optionally 'kind' ('preset' or 'emotion'), 'value', 'fade'",
                     'e.g. {"name": "smile", "value": 1, "fade": 0.4}')
    vals = _values([data.get("value", 1.0)] + ([data["fade"]] if "fade" in data else []))
    if vals is None:
        return error(400, "'value' and 'fade' must be finite numbers", 'e.g. {"name": "smile", "value": 0.5}')
    return _send(session_of(request).mixer, f"{kind}/{name}", vals)


async def capture(request: web.Request) -> web.Response:
    data = await json_body(request)
    name = data.get("name")
    if not isinstance(name, str):
        return error(400, "give the preset 'name' to save", 'e.g. {"name": "my_look"}')
    try:  # file work: off the event loop
        path = await asyncio.to_thread(session_of(request).mixer.capture, name)
    except PresetError as exc:
        return error(400, str(exc), "use 1 to 64 letters, digits, '_' or '-'; see GET /api/presets")
    except OSError as exc:
        return error(400, f"cannot save the preset: {exc.strerror or exc}", "check the presets folder is writable")
    return web.json_response({"ok": True, "name": name, "path": path})


async def reload(request: web.Request) -> web.Response:
    lib = session_of(request).mixer.library
    await asyncio.to_thread(lib.reload)
    listing = lib.to_json()
    return web.json_response({"ok": True, "errors": listing["errors"], "presets": lib.names("preset"),
                              "emotions": lib.names("emotion")})


async def midi_status(request: web.Request) -> web.Response:
    return web.json_response(_midi(request).status())


async def learn_start(request: web.Request) -> web.Response:
    data = await json_body(request)
    target = data.get("target")
    surface = _midi(request)
    if target is not None:
        if not isinstance(target, str):
            return error(400, "'target' must be a string", 'e.g. {"target": "blend/browInnerUp"}')
        try:  # validate the target before waiting for a fader
            session_of(request).mixer.parser.parse(ControlEvent(target, ()))
        except ControlError as exc:
            return error(400, f"target {target[:80]!r}: {exc}", "see GET /api/controls for the targets")
    surface.mapper.learn_start(target)
    return web.json_response(surface.status())


async def learn_assign(request: web.Request) -> web.Response:
    data = await json_body(request)
    target = data.get("target")
    if not isinstance(target, str):
        return error(400, "give the 'target' to bind the last moved MIDI control to",
                     'e.g. {"target": "blend/browInnerUp"}')
    surface = _midi(request)
    try:
        session_of(request).mixer.parser.parse(ControlEvent(target, ()))
        binding = surface.mapper.learn_assign(target)
    except ValueError as exc:
        return error(400, str(exc), "see GET /api/controls for the targets")
    except RuntimeError as exc:
        return error(409, str(exc), "move a control on the MIDI device first (POST /api/midi/learn/start)")
    return web.json_response({"ok": True, "binding": binding.to_toml(), **surface.status()})


async def learn_stop(request: web.Request) -> web.Response:
    surface = _midi(request)
    surface.mapper.learn_stop()
    return web.json_response(surface.status())


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/api/state", state)
    add_route(app, "GET", "/api/controls", controls)
    add_route(app, "POST", "/api/control", control)
    add_route(app, "GET", "/api/presets", presets)
    add_route(app, "POST", "/api/presets/apply", apply_preset)
    add_route(app, "POST", "/api/presets/capture", capture)
    add_route(app, "POST", "/api/presets/reload", reload)
    app.router.add_get("/api/midi", midi_status)
    app.router.add_post("/api/midi/learn/start", learn_start)
    app.router.add_post("/api/midi/learn/assign", learn_assign)
    app.router.add_post("/api/midi/learn/stop", learn_stop)
