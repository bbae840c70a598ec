"""The JSON API beside the controls: status, audio source/output pickers, mute/freeze, idle life, OpenAPI.

Controls and presets (`/api/state`, `/api/controls`, `/api/control`, presets) live in `api_controls`; this
module covers everything else the panel shows or changes. Every change goes through the daemon or the
mixer, the same path OSC and MIDI use, so the panel is just one more control surface.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from aiohttp import web

from bridge.controls.commands import IDLE_FEATURES
from bridge.core.deadline import Overdue, off_loop
from bridge.core.interfaces import ControlEvent
from bridge.http.responses import error, fail, json_body
from bridge.http.scope import add_route, session_of
from bridge.runtime import registry
from bridge.runtime.session import Session
from drivers.output.pulse import HUNG_FIX


def _gpu_memory() -> dict[str, Any] | None:
    """CUDA memory of this process, only when torch is already loaded (never imports torch here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        free, total = torch.cuda.mem_get_info()
        return {
            "allocated_bytes": int(torch.cuda.memory_allocated()),
            "reserved_bytes": int(torch.cuda.memory_reserved()),
            "device_free_bytes": int(free),
            "device_total_bytes": int(total),
            "device": str(torch.cuda.get_device_name()),
        }
    except Exception:  # a driver error must not break the status page
        return None


ACTIVITY_SOURCES = ("osc", "vmc", "midi", "http", "webrtc")


def control_activity(counters: dict[str, int]) -> dict[str, int]:
    """Control events per source, from the pipeline counters (e.g. "control/osc", "osc.events", "midi")."""
    out = dict.fromkeys(ACTIVITY_SOURCES, 0)
    for name, value in counters.items():
        low = name.lower()
        for src in ACTIVITY_SOURCES:
            if src in low.replace(".", "/").split("/") or low.startswith(src) or low.endswith(src):
                out[src] += int(value)
                break
    return out


def status_snapshot(hub: Session) -> dict[str, Any]:
    """Everything the status strip and `/metrics` show of one session, in one JSON-able dict."""
    live = hub.live_stats
    snap = hub.stats.snapshot()
    stages: dict[str, dict[str, float]] = snap.get("stages", {})  # type: ignore[assignment]
    counters: dict[str, int] = snap.get("counters", {})  # type: ignore[assignment]
    cfg = hub.config
    return {
        "running": hub.running,
        "health": hub.health(),  # the watchdog, with why a sink failed
        "time": hub.clock.now(),
        "fps": round(live.fps(time.monotonic()), 2),
        "target_fps": cfg.video.fps,
        "size": [cfg.video.width, cfg.video.height],
        "frames": live.frames,
        "dropped": hub.late_frames(),
        "stages": stages,
        "counters": counters,
        "latency_ms": {
            "glass_to_glass": live.latency_ms(),
            "av_delay": hub.av_delay * 1000.0,
            "per_sink": {  # glass-to-glass (audio capture → frame out) per output
                name[4:]: {k: s[k] for k in ("p50_ms", "p95_ms", "p99_ms", "count")}
                for name, s in stages.items() if name.startswith("g2g:")
            },
        },
        "gpu": _gpu_memory(),
        "viewers": hub.viewer_count,
        "session": hub.name,
        "control_activity": control_activity(counters),
        "muted": hub.muted,
        "frozen": hub.frozen,
        "avatar": hub.avatar_name,
        "audio_source": hub.audio_source_name,
        "recording": hub.recording_status(),
    }


def _bool_field(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise fail(400, f"{name!r} must be true or false, got {value!r}", f'{{"{name}": true}}')
    return value


DEVICE_WAIT_S = 10.0  # how long a request waits for the sound system (a hung server never answers)


def _list_devices() -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """Audio inputs and outputs through PortAudio; an empty list and the reason when it is unusable."""
    try:
        import sounddevice as sd

        devices = sd.query_devices()
    except Exception as exc:  # OSError without PortAudio, PortAudioError without a sound server
        return [], [], f"audio devices unavailable: {exc}"
    inputs, outputs = [], []
    for index, dev in enumerate(devices):
        entry = {"index": index, "name": dev["name"], "hostapi": int(dev["hostapi"])}
        if dev["max_input_channels"] > 0:
            inputs.append({**entry, "channels": int(dev["max_input_channels"])})
        if dev["max_output_channels"] > 0:
            outputs.append({**entry, "channels": int(dev["max_output_channels"])})
    return inputs, outputs, None


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_snapshot(session_of(request)))


async def audio(request: web.Request) -> web.Response:
    try:  # PortAudio asks the sound server, which may hang
        inputs, outputs, problem = await off_loop(_list_devices, DEVICE_WAIT_S, "listing the audio devices", HUNG_FIX)
    except Overdue as exc:
        inputs, outputs, problem = [], [], str(exc)
    cfg = session_of(request).config
    return web.json_response(
        {
            "sources": registry.names("audio"),
            "source": cfg.audio.source,
            "device": cfg.audio.device,
            "inputs": inputs,
            "outputs": outputs,
            "output": cfg.outputs.passthrough.device,
            "passthrough": cfg.outputs.passthrough.enabled,
            "problem": problem,
        }
    )


async def select_source(request: web.Request) -> web.Response:
    hub = session_of(request)
    body = await json_body(request)
    source = body.get("source", hub.config.audio.source)
    device = body.get("device", hub.config.audio.device)
    if source not in registry.names("audio"):
        return error(400, f"unknown audio source {source!r}", f"choose one of {registry.names('audio')}")
    if device is not None and not isinstance(device, (str, int)):
        return error(400, f"device must be a name or an index, got {device!r}", "see GET /api/audio")
    try:
        await off_loop(lambda: hub.set_audio_source(source, device), DEVICE_WAIT_S, f"opening {source!r}", HUNG_FIX)
    except Exception as exc:
        return error(400, f"could not open audio source {source!r} ({device!r}): {exc}",
                     "pick another device from GET /api/audio")
    return web.json_response({"source": source, "device": device})


async def select_output(request: web.Request) -> web.Response:
    hub = session_of(request)
    body = await json_body(request)
    device = body.get("device")
    if device is not None and not isinstance(device, (str, int)):
        return error(400, f"device must be a name, an index or null, got {device!r}", "see GET /api/audio")
    try:
        await off_loop(lambda: hub.set_audio_output(device), DEVICE_WAIT_S, f"opening {device!r}", HUNG_FIX)
    except Exception as exc:
        return error(400, f"could not open audio output {device!r}: {exc}", "pick one from GET /api/audio")
    return web.json_response({"device": device})


async def mute(request: web.Request) -> web.Response:
    hub = session_of(request)
    hub.set_muted(_bool_field(await json_body(request), "muted"))
    return web.json_response({"muted": hub.muted})


async def freeze(request: web.Request) -> web.Response:
    hub = session_of(request)
    hub.set_frozen(_bool_field(await json_body(request), "frozen"))
    return web.json_response({"frozen": hub.frozen})


async def get_idle(request: web.Request) -> web.Response:
    return web.json_response(session_of(request).config.idle.model_dump())


async def set_idle(request: web.Request) -> web.Response:
    hub = session_of(request)
    body = await json_body(request)
    idle = hub.config.idle
    known = set(type(idle).model_fields)
    unknown = sorted(set(body) - known)
    if unknown:
        return error(400, f"unknown idle setting(s) {unknown}", f"use any of {sorted(known)}")
    try:
        updated = idle.model_validate({**idle.model_dump(), **body})
    except Exception as exc:
        return error(400, f"invalid idle setting: {exc}", "booleans for blink/gaze/sway, amounts in range")
    for key in body:
        setattr(idle, key, getattr(updated, key))
    # The mixer's idle life takes amounts through the shared control vocabulary (0 turns a feature off).
    for kind in IDLE_FEATURES:
        if kind in body or f"{kind}_amount" in body:
            amount = float(getattr(idle, f"{kind}_amount")) if getattr(idle, kind) else 0.0
            hub.emit_control(ControlEvent(f"idle/{kind}", (amount,), source="http"))
    return web.json_response(idle.model_dump())


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/api/status", status)
    app.router.add_get("/api/audio", audio)
    add_route(app, "POST", "/api/audio/source", select_source)
    app.router.add_post("/api/audio/output", select_output)
    add_route(app, "POST", "/api/mute", mute)
    add_route(app, "POST", "/api/freeze", freeze)
    add_route(app, "GET", "/api/idle", get_idle)
    add_route(app, "POST", "/api/idle", set_idle)
    app.router.add_get("/api/openapi.json", openapi)


def _op(summary: str, body: dict[str, Any] | None = None, method_ok: str = "OK") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": method_ok},
            "400": {"description": "bad input: {error, fix}"},
            "401": {"description": "missing or wrong bearer token"},
            "403": {"description": "refused by the request policy (Host, Origin or Content-Type): {error, fix}"},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _obj(**props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props}


_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_STR = {"type": "string"}
_DEV = {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "avatar-bridge",
        "version": "0.1.0",
        "description": "Control and observe a running avatar-bridge daemon. When http.token is set, send "
        "'Authorization: Bearer <token>' on every path but /health and the static pages. Requests that change "
        "state need Content-Type: application/json (application/sdp for WHEP) and, from a browser, an origin "
        "of the daemon or of http.allowed_origins (see docs/api.md, request policy).",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": {**_op("liveness for supervisors (no token needed)"), "security": []}},
        "/metrics": {"get": _op("Prometheus text exposition")},
        "/panel/": {"get": _op("the control panel (HTML)")},
        "/api/status": {"get": _op("fps, dropped frames, stage timings, latency, GPU memory, viewers, activity")},
        "/api/state": {"get": _op("mixer state: manual controls and the mixed FaceParams")},
        "/api/controls": {"get": _op("the control vocabulary: ARKit controls, FLAME channels, presets")},
        "/api/control": {"post": _op("apply a control event", _obj(target=_STR, values={"type": "array", "items": _NUM}))},
        "/api/audio": {"get": _op("audio sources, input and output devices, current selection")},
        "/api/audio/source": {"post": _op("switch the audio source", _obj(source=_STR, device=_DEV))},
        "/api/audio/output": {"post": _op("switch the delayed-audio output device", _obj(device=_DEV))},
        "/api/mute": {"post": _op("mute or unmute the delayed audio", _obj(muted=_BOOL))},
        "/api/freeze": {"post": _op("freeze or unfreeze the picture", _obj(frozen=_BOOL))},
        "/api/idle": {
            "get": _op("idle-life settings"),
            "post": _op(
                "change idle-life settings (any subset)",
                _obj(blink=_BOOL, blink_amount=_NUM, gaze=_BOOL, gaze_amount=_NUM, sway=_BOOL, sway_amount=_NUM),
            ),
        },
        "/api/webrtc/offer": {"post": _op("WebRTC preview: SDP offer in, answer out", _obj(sdp=_STR, type=_STR))},
        "/api/scene": {"get": _op("the background showing, the names it may switch to, who wants alpha")},
        "/api/scene/background": {"post": _op("switch the background to a configured name", _obj(name=_STR))},
        "/api/record": {
            "get": _op("whether the session records, its file's name (in sessions.record_dir), frames, error"),
            "post": {**_op("start or stop recording into a file the daemon names (409 past sessions.max_recordings)",
                           _obj(recording=_BOOL))},
        },
        "/api/openapi.json": {"get": _op("this document")},
        "/api/sessions": {
            "get": _op("sessions with their frame counters and viewers, the capacity"),
            "post": {**_op("create a session (every field optional; 503 with Retry-After at capacity)",
                           _obj(avatar=_STR, face=_STR, audio=_STR, width=_NUM, height=_NUM, fps=_NUM, idle=_BOOL,
                                record=_BOOL),
                           "created: {id, api, whep}")},
        },
        "/api/sessions/{session}": {"get": _op("one session"), "delete": _op("end a created session")},
        "/api/sessions/{session}/status": {"get": _op("a session's status (every single-avatar route is mirrored "
                                                      "under /api/sessions/{session}/ and /sessions/{session}/whep)")},
    },
}
