"""Prometheus metrics at `/metrics`, written in the text exposition format (version 0.0.4) by hand.

The numbers are the same snapshot the panel's status strip shows (`bridge.http.api.status_snapshot`), so a
dashboard and the panel never disagree.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aiohttp import web

from bridge.http.api import status_snapshot
from bridge.http.keys import HOST_KEY

PREFIX = "avatar_bridge_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(raw: str) -> str:
    name = _NAME_OK.sub("_", raw)
    return name if not name[:1].isdigit() else "_" + name


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Collects families in order; each family has one HELP, one TYPE and its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._seen: set[str] = set()

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        full = PREFIX + metric_name(name) + ("_total" if kind == "counter" else "")
        if full in self._seen:
            raise ValueError(f"metric family {full} written twice")
        self._seen.add(full)
        self._lines.append(f"# HELP {full} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        self._lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            if labels:
                body = ",".join(f'{metric_name(k)}="{_label_value(v)}"' for k, v in labels.items())
                self._lines.append(f"{full}{{{body}}} {_number(value)}")
            else:
                self._lines.append(f"{full} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_metrics(status: dict[str, Any]) -> str:
    out = Exposition()
    out.family("up", "gauge", "1 while the pipeline is running", [({}, 1.0 if status["running"] else 0.0)])
    out.family("fps", "gauge", "frames per second delivered to sinks over the last 2 s", [({}, status["fps"])])
    out.family("target_fps", "gauge", "configured frame rate", [({}, status["target_fps"])])
    out.family("frames_observed", "counter", "frames published by the renderer", [({}, status["frames"])])
    stages: dict[str, dict[str, float]] = status["stages"]
    out.family(
        "stage_dropped",
        "counter",
        "frames dropped at a pipeline stage because it was late",
        [({"stage": name}, s.get("dropped", 0)) for name, s in sorted(stages.items())],
    )
    out.family(
        "stage_runs",
        "counter",
        "timed executions of a pipeline stage",
        [({"stage": name}, s.get("count", 0)) for name, s in sorted(stages.items())],
    )
    quantiles: list[tuple[dict[str, str], float]] = []
    for name, s in sorted(stages.items()):
        for q, key in (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms")):
            quantiles.append(({"stage": name, "quantile": q}, float(s.get(key, 0.0)) / 1000.0))
    out.family("stage_seconds", "gauge", "stage duration quantiles over the recent window", quantiles)
    g2g = status["latency_ms"]["glass_to_glass"]
    lat = [({"stat": k}, v / 1000.0) for k, v in sorted(g2g.items()) if v is not None]
    out.family("glass_to_glass_seconds", "gauge", "audio capture to frame delivery", lat)
    out.family("av_delay_seconds", "gauge", "configured audio-to-presentation delay",
               [({}, status["latency_ms"]["av_delay"] / 1000.0)])
    out.family("viewers", "gauge", "connected WebRTC viewers", [({}, status["viewers"])])
    out.family(
        "control_events",
        "counter",
        "control events received, per source",
        [({"source": k}, v) for k, v in sorted(status["control_activity"].items())],
    )
    out.family(
        "pipeline_counter",
        "counter",
        "raw pipeline counters",
        [({"name": k}, v) for k, v in sorted(status["counters"].items())],
    )
    gpu = status.get("gpu")
    gpu_samples = (
        [({"kind": "allocated"}, gpu["allocated_bytes"]), ({"kind": "reserved"}, gpu["reserved_bytes"])]
        if gpu
        else []
    )
    out.family("gpu_memory_bytes", "gauge", "CUDA memory of the daemon (absent without CUDA)", gpu_samples)
    out.family("muted", "gauge", "1 while the delayed audio is muted", [({}, 1.0 if status["muted"] else 0.0)])
    out.family("frozen", "gauge", "1 while the picture is frozen", [({}, 1.0 if status["frozen"] else 0.0)])
    return out.text()


def render_session_metrics(out: Exposition, sessions: list[dict[str, Any]], capacity: int | None,
                           refused: int) -> None:
    """The families of every session (label `session`) and the daemon's totals."""

    def each(key: str) -> list[tuple[dict[str, str], float]]:
        return [({"session": s["session"]}, float(s[key])) for s in sessions]

    out.family("sessions", "gauge", "sessions running", [({}, len(sessions))])
    out.family("sessions_capacity", "gauge", "sessions the daemon admits at once (absent while measuring)",
               [({}, capacity)] if capacity is not None else [])
    out.family("sessions_refused", "counter", "session creations refused for capacity", [({}, refused)])
    out.family("session_frames", "counter", "frames a session rendered", each("frames"))
    out.family("session_late_frames", "counter", "frames a session dropped because they were late", each("dropped"))
    out.family("session_fps", "gauge", "frames per second a session delivered over the last 2 s", each("fps"))
    out.family("session_viewers", "gauge", "WebRTC viewers of a session", each("viewers"))
    out.family("session_recording", "gauge", "1 while a session records (sessions.record_dir), else 0",
               [({"session": s["session"]}, float(s["recording"]["recording"])) for s in sessions])
    g2g = [({"session": s["session"], "stat": k}, v / 1000.0) for s in sessions
           for k, v in sorted(s["latency_ms"]["glass_to_glass"].items()) if v is not None]
    out.family("session_glass_to_glass_seconds", "gauge", "audio capture to frame delivery, per session", g2g)
    for key, name, help_text in (("frames", "all_sessions_frames", "frames rendered by every session"),
                                 ("dropped", "all_sessions_late_frames", "late frames dropped in every session"),
                                 ("viewers", "all_sessions_viewers", "WebRTC viewers of every session")):
        kind = "gauge" if key == "viewers" else "counter"
        out.family(name, kind, help_text, [({}, float(sum(s[key] for s in sessions)))])


async def metrics(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    status = status_snapshot(host.session)
    sessions = [status] + [status_snapshot(s) for s in host.sessions if s is not host.session]
    out = Exposition()
    render_session_metrics(out, sessions, host.sessions.capacity(), host.sessions.refused)
    body = render_metrics(status) + out.text()
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
