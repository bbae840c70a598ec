"""Four sessions of one daemon at 128² each render their frames: counted against what their clocks asked for,
and compared with one session alone on this machine just before (as loaded as it is at that moment), so a busy
machine slows both sides of the comparison and what is measured is what the other sessions cost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bridge.runtime import registry
from tests.avatars import FlatAvatar
from tests.sessions.test_sessions_api import Api, rendered, sessions_daemon

FPS = 25
WINDOW_S = 4.0


async def rates(daemon: Any, names: list[str]) -> dict[str, float]:
    """Frames each session rendered in the window, as a share of the frames its clock asked for."""
    before = {name: rendered(daemon, name) for name in names}
    start = time.monotonic()
    await asyncio.sleep(WINDOW_S)
    elapsed = time.monotonic() - start
    return {name: (rendered(daemon, name) - before[name]) / (elapsed * FPS) for name in names}


async def test_four_sessions_at_128_render_nine_in_ten_of_their_frames() -> None:
    async with sessions_daemon(video={"width": 128, "height": 128, "fps": FPS},
                               audio={"source": "file", "loop": True, "realtime": True},
                               sessions={"max": 4}) as daemon, aiohttp.ClientSession() as http:
        await asyncio.sleep(1.0)  # past the stream's start
        alone = (await rates(daemon, ["default"]))["default"]
        assert alone > 0.5, f"one session alone renders only {alone:.0%} of its frames on this machine"
        api = Api(daemon, http)
        names = ["default"] + [await api.create() for _ in range(3)]
        await asyncio.sleep(1.0)
        together = await rates(daemon, names)
        print(f"one session alone: {alone:.1%}; four: " + ", ".join(f"{r:.1%}" for r in together.values()))
        for name, rate in together.items():
            assert rate >= 0.9 * alone, (f"session {name} rendered {rate:.0%} of its frames among four, "
                                         f"one session alone {alone:.0%}: {together}")
        status, body, _ = await api.call("GET", "/api/sessions")
        assert status == 200 and all(s["frames"] > 0 for s in body["sessions"]) and len(body["sessions"]) == 4


class StarvedAvatar(FlatAvatar):
    """The flat avatar on a starved renderer: every frame takes 0.2 s (five frame periods)."""

    render_seconds = 0.2


async def test_a_starved_session_does_not_make_the_others_late() -> None:
    async with sessions_daemon(video={"width": 128, "height": 128, "fps": FPS},
                               audio={"source": "file", "loop": True, "realtime": True},
                               sessions={"max": 3}) as daemon, aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        fast = await api.create()
        await asyncio.sleep(1.0)
        calm = await rates(daemon, ["default", fast])
        table = registry.DRIVERS["avatar"]
        before, table["demo"] = table["demo"], f"{__name__}:StarvedAvatar"
        try:
            slow = await api.create()
        finally:
            table["demo"] = before
        await asyncio.sleep(1.0)
        beside = await rates(daemon, ["default", fast, slow])
        print(f"two sessions: {calm}; beside a starved one: {beside}")
        assert beside[slow] < 0.5, f"the starved session was not starved: {beside}"
        for name in ("default", fast):
            assert beside[name] >= 0.9 * calm[name], (name, calm, beside)
        status, body, _ = await api.call("GET", f"/api/sessions/{slow}")
        assert status == 200 and body["late_frames"] > 0, body
