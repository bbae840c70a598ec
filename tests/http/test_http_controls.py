"""The controls HTTP API on a real aiohttp server (the app the daemon serves), and the CLI talking to it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from bridge.core.clock import MediaClock
from bridge.core.config import Config
from bridge.core.fanout import Broadcast
from bridge.core.stats import PipelineStats
from bridge.http.app import build_app
from drivers.control.midi import MidiControlSurface, MidiMap, MidiMapper
from tests.control.osc_helpers import MixerTicker
from tests.controls.conftest import make_mixer

REPO = Path(__file__).resolve().parents[2]


async def serve(host: object) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(build_app(host))  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def until(condition: Any, timeout: float = 20.0) -> None:
    """Until the mixer ticker has shown `condition` (the next tick, however long this machine takes to get there)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the mixer never showed the change"
        await asyncio.sleep(0.02)


async def test_state_controls_control_presets_and_capture(presets_dir: Path) -> None:
    mixer = make_mixer(presets_dir, fade=0.0)
    midi = MidiControlSurface(MidiMapper(MidiMap(path=presets_dir / "midi" / "learned.toml")))
    session = SimpleNamespace(config=Config(), mixer=mixer, running=True, frames=Broadcast(), clock=MediaClock(25),
                              stats=PipelineStats())
    host = SimpleNamespace(config=session.config, session=session, control_surfaces=[midi], stats=session.stats,
                           surface=lambda name: midi if name == "midi" else None)
    runner, url = await serve(host)
    try:
        with MixerTicker(mixer) as ticker:
            async with aiohttp.ClientSession() as s:
                vocab = await (await s.get(f"{url}/api/controls")).json()
                assert len(vocab["arkit"]) == 52 and "smile" in vocab["presets"] and "happy" in vocab["emotions"]
                r = await s.post(f"{url}/api/control", json={"target": "blend/browInnerUp", "values": 1})
                assert r.status == 200
                r = await s.post(f"{url}/api/control", json={"target": "blend/nope", "values": [1]})
                assert r.status == 400 and "unknown ARKit" in (await r.json())["error"]
                r = await s.post(f"{url}/api/control", json={"target": "gaze", "values": ["NaN"]})
                assert r.status == 400
                r = await s.post(f"{url}/api/control", data=b"{not json", headers={"Content-Type": "application/json"})
                assert r.status == 400
                r = await s.post(f"{url}/api/presets/apply", json={"name": "smile", "value": 0.5})
                assert r.status == 200
                await until(lambda: abs(ticker.last.expression[1] - 0.6) < 1e-4
                            and abs(ticker.last.expression[0] - 0.495) < 1e-4)  # both applied by the mixer
                state = await (await s.get(f"{url}/api/state")).json()
                assert state["manual"]["blend/browInnerUp"] == 1.0 and state["manual"]["preset/smile"] == 0.5
                assert abs(state["mixed"]["expression"][1] - 0.6) < 1e-4
                assert abs(state["mixed"]["expression"][0] - 0.495) < 1e-4
                assert state["surfaces"]["midi"]["learning"] is False
                # Capture from the CLI, against this server.
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bridge.cli", "presets", "capture", "surprise_look", "--url", url,
                    cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await proc.communicate()
                assert proc.returncode == 0, err.decode()
                assert b"surprise_look" in out
                assert (presets_dir / "captured.toml").is_file()
                presets = await (await s.get(f"{url}/api/presets")).json()
                assert any(p["name"] == "surprise_look" for p in presets["presets"])
                await s.post(f"{url}/api/control", json={"target": "reset", "values": [0]})
                await until(lambda: abs(ticker.last.expression[1]) < 1e-6)
                r = await s.post(f"{url}/api/presets/apply", json={"name": "surprise_look", "fade": 0})
                assert r.status == 200
                await until(lambda: abs(ticker.last.expression[1] - 0.6) < 1e-4)
                # Editing a presets file is picked up without a restart.
                text = (presets_dir / "expressions.toml").read_text()
                (presets_dir / "expressions.toml").write_text(text + "\n[brand_new]\nbrowInnerUp = 0.5\n")
                r = await s.post(f"{url}/api/presets/reload", json={})
                assert "brand_new" in (await r.json())["presets"]
                # MIDI learn over HTTP: move a fader, then pick a control.
                r = await s.post(f"{url}/api/midi/learn/start", json={})
                assert (await r.json())["learning"] is True
                import mido

                midi.dispatch(mido.Message("control_change", control=14, value=100))
                r = await s.post(f"{url}/api/midi/learn/assign", json={"target": "blend/mouthPucker"})
                body = await r.json()
                assert r.status == 200 and body["binding"]["control"] == 14
                assert (presets_dir / "midi" / "learned.toml").is_file()
                r = await s.post(f"{url}/api/midi/learn/assign", json={"target": "blend/nothing"})
                assert r.status == 400
                # CLI errors are one line with the fix.
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bridge.cli", "presets", "apply", "nope", "--url", url,
                    cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                _, err = await proc.communicate()
                assert proc.returncode == 2 and b"unknown preset 'nope'" in err and b"Traceback" not in err
    finally:
        await runner.cleanup()
