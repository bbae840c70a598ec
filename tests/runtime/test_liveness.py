"""Liveness with a starved renderer (tests.avatars.StarvedAvatar: after 25 frames each render blocks for a
minute, as on a machine too loaded to give the renderer a turn): the clock, not the renderer, ends a timed run;
/health answers at once with 503 naming the stalled stages and since when; SIGINT or SIGTERM stop the daemon
within two seconds with the recording finalised and no native-thread abort."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.core.config import load_config
from bridge.http.app import build_app
from bridge.runtime.daemon import Daemon
from tests.avatars import SCENE_SETUP_RENDERS, StarvedAvatar, as_demo_avatar
from tests.commands.test_cli import env
from tests.conftest import (
    REPO,
    read_recording,
    recorder_frames,
    slowest_render_s,
    started_daemon,
    stopped_daemon,
)

STREAM_FRAMES = StarvedAvatar.slow_after - SCENE_SETUP_RENDERS  # frames the stream gets before the starvation

BASE = {
    "video": {"width": 96, "height": 96, "fps": 25},
    "audio": {"source": "silence"},
    "http": {"host": "127.0.0.1", "port": 0},
    "osc": {"enabled": False}, "vmc": {"enabled": False}, "midi": {"enabled": False},
}


async def get_health(port: int) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
        return r.status, await r.json(), time.monotonic() - started


async def test_the_clock_ends_a_timed_run_and_health_names_the_stalled_renderer() -> None:
    with as_demo_avatar("tests.avatars:StarvedAvatar"):
        daemon = Daemon(load_config(None, overrides=BASE, environ={}), duration=6.0, http_app=build_app)
    ready = asyncio.Event()
    started = time.monotonic()
    task = asyncio.get_running_loop().create_task(daemon.serve(ready=lambda _d: ready.set()))
    await asyncio.wait_for(ready.wait(), 60)
    status, body, _ = await get_health(daemon.http_port)
    assert status == 200 and body["ok"] and set(body["stages"]) >= {"audio", "face", "clock", "render"}
    stalled: dict[str, Any] = {}
    while not task.done():  # the renderer stops after 25 frames (1 s); it is stalled 2 s later
        status, body, took = await get_health(daemon.http_port)
        if status == 503:
            stalled = {s["stage"]: s for s in body["stalled"]}
            break
        await asyncio.sleep(0.1)
    assert stalled, "the run ended before /health noticed the stalled renderer"
    assert body["ok"] is False and "render" in stalled and "clock" not in stalled and "audio" not in stalled
    assert stalled["render"]["state"] == "stalled" and stalled["render"]["last_frame_s_ago"] > 2.0
    assert stalled["render"]["since"].endswith("+00:00")  # a UTC time: since when
    assert took < 1.0  # answered from memory while the render thread is blocked for a minute
    code = await asyncio.wait_for(task, 30)
    ran = time.monotonic() - started
    assert code == 0
    # The run ended when its six seconds of video were due, not when (or whether) the renderer finished;
    # the margin covers the A/V delay before the first frame and the shutdown.
    assert ran < 6.0 + daemon.av_delay + 3.0, f"a 6 s run took {ran:.1f} s"
    assert daemon.pipeline.frames_rendered == STREAM_FRAMES


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_starved_daemon_quickly_and_finalises_the_recording(tmp_path: Path,
                                                                              sig: signal.Signals) -> None:
    out = tmp_path / "starved.mp4"
    proc, url = started_daemon([sys.executable, "-m", "tests.avatars", "60@25", "demo", "--size", "96x96",
                                "--port", "0", "--record", str(out)], REPO, env())
    deadline = time.monotonic() + 60
    while True:  # until the renderer is starved (and the recorder has the frames it got)
        assert time.monotonic() < deadline, "the renderer never stalled"
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5)
        except urllib.error.HTTPError as exc:
            if exc.code == 503 and "render" in {s["stage"] for s in json.load(exc)["stalled"]}:
                break
        time.sleep(0.1)
    code, rest, took = stopped_daemon(proc, sig)
    assert code == 0, rest
    assert took < 2.0, f"stopping took {took:.2f} s"
    assert "terminate called" not in rest and "Traceback" not in rest
    assert f"avatar-bridge: recorded {out}" in rest
    rec = read_recording(out)  # finalised: decodes to the end without an error
    assert rec.frames >= STREAM_FRAMES and rec.audio_seconds == pytest.approx(rec.synced_audio_seconds(25), abs=1e-6)


def test_stopping_while_torch_renders_exits_cleanly(tmp_path: Path) -> None:
    """The demo head at 512x512 on the CPU keeps the render thread inside torch most of the time. Leaving
    the interpreter's teardown to end that thread aborted the process ("terminate called without an active
    exception") in three runs out of four; the program now leaves once its outputs are closed."""
    proc, url = started_daemon([sys.executable, "-m", "bridge.cli", "demo", "--size", "512x512", "--port", "0",
                                "--record", str(tmp_path / "busy.mp4")], tmp_path, env())
    deadline = time.monotonic() + 120
    while recorder_frames(url) < 3:  # renders under way (however long this machine takes for the first ones)
        assert time.monotonic() < deadline, "no frame was recorded"
        time.sleep(0.2)
    # Stopping waits for the render in flight and no more: 2 s beside the slowest render on this machine now.
    render_s = slowest_render_s(url)
    code, rest, took = stopped_daemon(proc, signal.SIGTERM)
    assert code == 0 and "terminate called" not in rest, rest
    assert took < 2.0 + render_s, f"stopping took {took:.2f} s (the slowest render took {render_s:.2f} s)"
    assert read_recording(tmp_path / "busy.mp4").frames > 0
