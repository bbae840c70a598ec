"""Switching backgrounds at run time on a real daemon: by name over HTTP (through the request policy) and OSC
over real UDP, names checked against the configured table; the frames show the switch. Alpha follows demand:
a viewer asking for packed alpha makes frames carry it, and its leaving stops it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from PIL import Image
from pythonosc.osc_message_builder import OscMessageBuilder

from tests.http.conftest import running_daemon


async def corner_becomes(daemon: Any, colour: tuple[int, int, int], timeout: float = 30.0) -> None:
    """Until a rendered frame's top-left pixel (away from the avatar) is `colour`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = daemon.pipeline.last_frame
        if frame is not None and tuple(int(v) for v in frame.rgb[1, 1]) == colour:
            return
        seen = None if frame is None else tuple(frame.rgb[1, 1])
        assert loop.time() < deadline, f"the background never became {colour} (corner {seen})"
        await asyncio.sleep(0.05)


def osc(port: int, address: str, *args: Any) -> None:
    msg = OscMessageBuilder(address)
    for a in args:
        msg.add_arg(a)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(msg.build().dgram, ("127.0.0.1", port))


async def test_backgrounds_switch_by_name_over_http_and_osc(tmp_path: Path) -> None:
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[:] = (10, 200, 30)
    Image.fromarray(picture).save(tmp_path / "office.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    table = {"office": str(tmp_path / "office.png"), "red": "#ff0000", "broken": str(tmp_path / "broken.png")}
    async with running_daemon(avatar={"background": "#0000ff", "backgrounds": table},
                              osc={"enabled": True, "port": 0}) as daemon:
        base = f"http://127.0.0.1:{daemon.http_port}"
        await corner_becomes(daemon, (0, 0, 255))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/scene") as r:
                body = await r.json()
            assert body["background"] == "default"
            assert body["backgrounds"] == ["black", "broken", "default", "green", "office", "red", "studio"]
            assert body["alpha"] == {"wanted": False, "holders": {}}
            async with http.post(f"{base}/api/scene/background", json={"name": "red"}) as r:
                assert r.status == 200, await r.text()
            await corner_becomes(daemon, (255, 0, 0))
            for bad in ({"name": "../../etc/passwd"}, {"name": str(tmp_path / "office.png")}, {"name": 3}, {}):
                async with http.post(f"{base}/api/scene/background", json=bad) as r:
                    answer = await r.json()
                    assert r.status == 400 and "no background named" in answer["error"], answer
            # The request policy: a form post, or JSON from another web site, changes nothing.
            async with http.post(f"{base}/api/scene/background", data="name=green",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                assert r.status == 403
            async with http.post(f"{base}/api/scene/background", json={"name": "green"},
                                 headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 403
            async with http.post(f"{base}/api/scene/background", json={"name": "broken"}) as r:
                answer = await r.json()
                assert r.status == 409 and "cannot be read" in answer["error"], answer
            async with http.get(f"{base}/api/scene") as r:
                assert (await r.json())["background"] == "red"
        port = daemon.surface("osc").bound[1]
        osc(port, "/avatar/background", "office")
        await corner_becomes(daemon, (10, 200, 30))
        before = dict(daemon.surface("osc").counters)
        osc(port, "/avatar/background", "/etc/passwd")
        osc(port, "/avatar/background", 1.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while daemon.surface("osc").counters["unknown"] + daemon.surface("osc").counters["bad_args"] < \
                before["unknown"] + before["bad_args"] + 2:
            assert loop.time() < deadline, "the bad OSC messages were not counted"
            await asyncio.sleep(0.02)
        assert daemon.backgrounds.current == "office"


async def test_each_session_has_its_own_background() -> None:
    """A created session switches its own background (HTTP under its path, OSC under its name); the default
    session's stays."""
    from tests.avatars import as_demo_avatar

    with as_demo_avatar():
        async with running_daemon(avatar={"background": "#0000ff", "backgrounds": {"red": "#ff0000"}},
                                  osc={"enabled": True, "port": 0}, sessions={"max": 2}) as daemon:
            base = f"http://127.0.0.1:{daemon.http_port}"
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/api/sessions", json={}) as r:
                    assert r.status == 201, await r.text()
                    name = (await r.json())["id"]
                session = daemon.sessions.get(name)
                async with http.post(f"{base}/api/sessions/{name}/scene/background", json={"name": "red"}) as r:
                    assert r.status == 200, await r.text()
                async with http.get(f"{base}/api/sessions/{name}/scene") as r:
                    assert (await r.json())["background"] == "red"
                async with http.get(f"{base}/api/scene") as r:
                    assert (await r.json())["background"] == "default"
            await corner_becomes(session, (255, 0, 0))
            osc(daemon.surface("osc").bound[1], f"/avatar/{name}/background", "green")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while session.backgrounds.current != "green":
                assert loop.time() < deadline, "OSC did not switch the session's background"
                await asyncio.sleep(0.02)
            await corner_becomes(session, (0, 255, 0))
            assert daemon.backgrounds.current == "default"
