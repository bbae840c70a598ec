"""HTTP routes of the controls: state, vocabulary, control events, presets, MIDI learn.

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

import json
import math
from typing import Any

from aiohttp import web

from bridge.controls.vocabulary import vocabulary
from bridge.core.interfaces import ControlEvent
from bridge.runtime.build import find_surface


def _error(status: int, message: str, fix: str = "") -> web.Response:
    body = {"error": message}
    if fix:
        body["fix"] = fix
    return web.json_response(body, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body is not JSON",
                                                  "fix": "send a JSON object with Content-Type: application/json"}),
                                 content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json")
    return data


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


def setup(app: web.Application, daemon: Any) -> None:
    def mixer() -> Any:
        m = getattr(daemon, "mixer", None)
        if m is None:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": "this daemon runs without a mixer"}),
                                             content_type="application/json")
        return m

    def send(target: str, values: tuple[float, ...]) -> web.Response:
        m = mixer()
        if not m.apply(ControlEvent(target, values, source="http")):
            return _error(400, m.last_error, "see GET /api/controls for the targets and their values")
        return web.json_response({"ok": True, "target": target, "values": list(values)})

    async def state(_: web.Request) -> web.Response:
        body = mixer().state()
        surfaces = {}
        for s in getattr(daemon, "control_surfaces", []) or []:
            info = s.status() if hasattr(s, "status") else {"counters": getattr(s, "counters", {})}
            if hasattr(s, "bound"):
                info = {**info, "bound": s.bound, "last_error": getattr(s, "last_error", "")}
            surfaces[s.name] = info
        body["surfaces"] = surfaces
        return web.json_response(body)

    async def controls(_: web.Request) -> web.Response:
        m = mixer()
        lib = m.library
        body = vocabulary(lib.names("preset") if lib else [], lib.names("emotion") if lib else [])
        body["avatar_map"] = m.arkit.to_json()
        return web.json_response(body)

    async def control(request: web.Request) -> web.Response:
        data = await _body(request)
        target = data.get("target")
        values = _values(data.get("values"))
        if not isinstance(target, str) or values is None:
            return _error(400, "give 'target' (a string) and 'values' (a finite number or a list of up to 8)",
                          'e.g. {"target": "blend/jawOpen", "values": [0.7]}')
        return send(target, values)

    async def presets(_: web.Request) -> web.Response:
        lib = mixer().library
        return web.json_response(lib.to_json() if lib else {"presets": [], "errors": {}})

    async def apply_preset(request: web.Request) -> web.Response:
        data = await _body(request)
        name, kind = data.get("name"), data.get("kind", "preset")
        if not isinstance(name, str) or kind not in ("preset", "emotion"):
            return _error(400, "give 'name' and optionally 'kind' ('preset' or 'emotion'), 'value', 'fade'")
        vals = _values([data.get("value", 1.0)] + ([data["fade"]] if "fade" in data else []))
        if vals is None:
            return _error(400, "'value' and 'fade' must be finite numbers")
        return send(f"{kind}/{name}", vals)

    async def capture(request: web.Request) -> web.Response:
        data = await _body(request)
        name = data.get("name")
        if not isinstance(name, str):
            return _error(400, "give the preset 'name' to save")
        try:
            path = mixer().capture(name)
        except (ValueError, OSError) as exc:
            return _error(400, str(exc), "pick a name of letters, digits, '_' or '-'; check the presets folder is writable")
        return web.json_response({"ok": True, "name": name, "path": path})

    async def reload(_: web.Request) -> web.Response:
        lib = mixer().library
        if lib is None:
            return _error(409, "no presets folder is configured")
        lib.reload()
        return web.json_response({"ok": True, "errors": lib.errors, "presets": lib.names("preset"),
                                  "emotions": lib.names("emotion")})

    def midi() -> Any:
        s = find_surface(daemon, "midi")
        if s is None:
            raise web.HTTPConflict(text=json.dumps({"error": "MIDI input is not running",
                                                    "fix": "set midi.enabled = true and restart"}),
                                   content_type="application/json")
        return s

    async def midi_status(_: web.Request) -> web.Response:
        return web.json_response(midi().status())

    async def learn_start(request: web.Request) -> web.Response:
        data = await _body(request) if request.can_read_body else {}
        target = data.get("target")
        s = midi()
        if target is not None:
            probe = mixer().parse  # validate the target before waiting for a fader
            try:
                probe(ControlEvent(str(target), ()))
            except ValueError as exc:
                return _error(400, f"target {target!r}: {exc}")
        s.mapper.learn_start(target)
        return web.json_response(s.status())

    async def learn_assign(request: web.Request) -> web.Response:
        data = await _body(request)
        target = data.get("target")
        if not isinstance(target, str):
            return _error(400, "give the 'target' to bind the last moved MIDI control to")
        s = midi()
        try:
            mixer().parse(ControlEvent(target, ()))
            binding = s.mapper.learn_assign(target)
        except ValueError as exc:
            return _error(400, str(exc))
        except RuntimeError as exc:
            return _error(409, str(exc))
        return web.json_response({"ok": True, "binding": binding.to_toml(), **s.status()})

    async def learn_stop(_: web.Request) -> web.Response:
        s = midi()
        s.mapper.learn_stop()
        return web.json_response(s.status())

    app.router.add_get("/api/state", state)
    app.router.add_get("/api/controls", controls)
    app.router.add_post("/api/control", control)
    app.router.add_get("/api/presets", presets)
    app.router.add_post("/api/presets/apply", apply_preset)
    app.router.add_post("/api/presets/capture", capture)
    app.router.add_post("/api/presets/reload", reload)
    app.router.add_get("/api/midi", midi_status)
    app.router.add_post("/api/midi/learn/start", learn_start)
    app.router.add_post("/api/midi/learn/assign", learn_assign)
    app.router.add_post("/api/midi/learn/stop", learn_stop)
