"""Publishing into a real Janus (Debian's package, started here) and playing from it: the daemon joins a
VideoRoom through the Janus WebSocket API, Janus's own janus.js subscribes in headless Chromium and decodes
the avatar (frames counted, picture not black) while the daemon itself serves no viewer. Also: Janus kicking
the publisher makes it publish again, stopping leaves the room, a missing room is created or reported, and a
Janus that is not there is reported with a fix."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from bridge.core.config import ConfigError, load_config
from drivers.output.webrtc.janus import JanusPublisher
from tests.conftest import needs_program, require_program
from tests.http.cdp import Browser, chromium_available
from tests.output.conftest import base_url, first_error, hub_of, running_daemon, wait_until
from tests.output.janus_server import ADAPTER_JS, JANUS_JS, Janus, janus_available, running_janus
from tests.output.test_viewer_chromium import decode_png

PAGE = Path(__file__).with_name("janus_viewer.html")
# Chromium's host candidates as plain addresses (Janus here ignores mDNS names).
CHROMIUM_FLAGS = ("--disable-features=WebRtcHideLocalIpsWithMdns",)


@pytest.fixture
async def janus(tmp_path: Path) -> AsyncIterator[Janus]:
    require_program("janus", "janus", found=janus_available())
    async with running_janus(tmp_path) as server:
        yield server


async def publishers_in(janus: Janus, room: int) -> list[dict[str, object]]:
    data = await janus.request({"request": "listparticipants", "room": room})
    return [p for p in data.get("participants", []) if p.get("publisher")]


def latest_frame(daemon: Any) -> np.ndarray:
    sub = daemon.frames.subscribe(maxsize=1)
    try:
        frame = sub.get(timeout=10)
        assert frame is not None, "the daemon renders no frames"
        return np.asarray(frame.rgb[..., :3])
    finally:
        sub.close()


async def janus_state(daemon: object) -> dict[str, object]:
    """The Janus publisher as the daemon reports it (`/api/webrtc/viewers` → janus)."""
    async with aiohttp.ClientSession() as http, http.get(base_url(daemon) + "/api/webrtc/viewers") as r:
        return dict((await r.json())["janus"])


async def serve_viewer_page() -> tuple[web.AppRunner, str]:
    """The subscriber page with Debian's janus.js and webrtc-adapter, on a loopback port of its own."""
    app = web.Application()
    for route, path in (("/", PAGE), ("/janus.js", JANUS_JS), ("/adapter.js", ADAPTER_JS)):
        async def send(_: web.Request, path: Path = path) -> web.FileResponse:
            return web.FileResponse(path)

        app.router.add_get(route, send)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


@needs_program("chromium", "chromium chromium-driver", found=chromium_available())
@needs_program("janus.js", "libjs-janus-gateway libjs-webrtc-adapter", found=JANUS_JS.exists() and ADAPTER_JS.exists())
async def test_janus_js_in_chromium_plays_the_avatar_from_janus(janus: Janus, tmp_path: Path) -> None:
    async with running_daemon(webrtc={"janus": {"url": janus.url, "room": janus.room}}) as daemon:
        state = await janus_state(daemon)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while state["state"] != "publishing":
            assert loop.time() < deadline, f"not publishing to Janus within 60 s: {state}\n{janus.log_tail()}"
            await asyncio.sleep(0.2)
            state = await janus_state(daemon)
        assert state["sessions"] == 1 and state["room"] == janus.room, state
        publishers = await publishers_in(janus, janus.room)
        assert [p["display"] for p in publishers] == ["Avatar Bridge"], publishers
        feed = publishers[0]["id"]

        runner, page_url = await serve_viewer_page()
        browser = Browser(extra_flags=CHROMIUM_FLAGS)
        await browser.start()
        try:
            page = await browser.open(f"{page_url}?server={janus.url}&room={janus.room}&feed={feed}")
            await page.wait_for("window.sub && (window.sub.state === 'playing' || window.sub.error)", timeout=40)
            assert await page.eval("window.sub.error") is None, await page.eval("window.sub.error")
            # Real decoded frames, counted by the browser's own receiver.
            inbound = """(async () => { const out = {};
                (await window.sub.handle.webrtcStuff.pc.getStats()).forEach((r) => {
                  if (r.type === 'inbound-rtp') out[r.kind] = r; });
                return out; })()"""
            stats = await page.wait_for(f"""(async () => {{ const s = await {inbound};
                return s.video && s.video.framesDecoded >= 10 && s.audio && s.audio.packetsReceived > 25 ? s : null;
                }})()""", timeout=120)
            assert stats["video"]["frameWidth"] == 128, stats["video"]
            first = await page.eval("document.getElementById('video').currentTime")
            await page.wait_for(f"document.getElementById('video').currentTime > {first} + 0.5", timeout=20)
            assert sorted(await page.eval("window.sub.tracks")) == ["audio", "video"]

            shot = await page.send("Page.captureScreenshot", {"format": "png"})
            (tmp_path / "janus_viewer.png").write_bytes(base64.b64decode(shot["data"]))
            image = decode_png(base64.b64decode(shot["data"]))
            video_px = image[:256, :256].astype(np.float32)  # the 256 x 256 video element at the top left
            assert video_px.mean() > 30, f"the video from Janus is black (mean {video_px.mean():.1f})"
            # ... and it is our avatar: it matches what the daemon renders (the head barely moves in silence).
            rendered = await loop.run_in_executor(None, latest_frame, daemon)
            ours = rendered.repeat(2, axis=0).repeat(2, axis=1).astype(np.float32)
            match = float(np.corrcoef(video_px.mean(axis=2).ravel(), ours.mean(axis=2).ravel())[0, 1])
            assert match > 0.8, f"the picture from Janus is not the avatar (correlation {match:.2f})"
        finally:
            await browser.close()
            await runner.cleanup()
        # Everyone watched through Janus: the daemon itself served no viewer.
        assert hub_of(daemon).count == 0


async def test_janus_publisher_republishes_leaves_and_reports(janus: Janus) -> None:
    async with running_daemon() as daemon:
        publisher = JanusPublisher(daemon, janus.url, janus.room, display="first", backoff=(0.2, 1.0))
        publisher.start()
        try:
            await wait_until(lambda: publisher.state == "publishing", 60, "publishing to Janus")
            first = publisher.feed
            assert [p["id"] for p in await publishers_in(janus, janus.room)] == [first]
            # Janus drops the publisher (a moderator's kick): it notices and joins again as a new feed.
            kicked = await janus.request({"request": "kick", "room": janus.room, "id": first})
            assert kicked.get("videoroom") == "success", kicked
            await wait_until(lambda: publisher.sessions == 2 and publisher.state == "publishing", 60,
                             "publishing again after the kick")
            assert publisher.feed != first
            assert [p["id"] for p in await publishers_in(janus, janus.room)] == [publisher.feed]
        finally:
            await publisher.stop()
        assert publisher.state == "stopped"
        assert await publishers_in(janus, janus.room) == [], "the publisher stayed in the room after stop"

        # A room that does not exist: created when allowed, a fix in the error otherwise.
        missing = await first_error(JanusPublisher(daemon, janus.url, 777, create_room=False, backoff=(0.2, 0.5)))
        assert "no VideoRoom room 777" in missing and "create_room" in missing
        created = JanusPublisher(daemon, janus.url, 778, backoff=(0.2, 0.5))
        created.start()
        try:
            await wait_until(lambda: created.state == "publishing", 60, "publishing into a created room")
            assert len(await publishers_in(janus, 778)) == 1
        finally:
            await created.stop()

        # No Janus at that address.
        nowhere = await first_error(JanusPublisher(daemon, "ws://127.0.0.1:9", janus.room, backoff=(0.2, 0.5)))
        assert "cannot reach Janus" in nowhere


def test_janus_url_must_be_the_websocket_api() -> None:
    with pytest.raises(ConfigError, match="WebSocket API"):
        load_config(None, overrides={"webrtc": {"janus": {"url": "http://127.0.0.1:8088/janus"}}}, environ={})
    cfg = load_config(None, overrides={"webrtc": {"janus": {"url": "ws://127.0.0.1:8188", "room": "avatars"}}},
                      environ={})
    assert cfg.webrtc.janus.room == "avatars" and cfg.webrtc.janus.create_room
