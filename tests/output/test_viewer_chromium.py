"""The built-in viewer page in headless Chromium against a real daemon: it plays the stream (a screenshot
shows the avatar, not black, and audio arrives), and its talk button drives the avatar from the browser's
microphone (Chromium's fake capture device)."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import av
import numpy as np

from tests.conftest import needs_program
from tests.http.cdp import Browser, chromium_available
from tests.output.conftest import base_url, hub_of, running_daemon, wait_until
from tests.output.test_webrtc_peers import tone_file

pytestmark = needs_program("chromium", "chromium chromium-driver", found=chromium_available())

FAKE_MEDIA = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


def decode_png(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), format="png_pipe") as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"))


async def jaw_openings(daemon: Any, frames: int, timeout: float) -> list[float]:
    """The jaw opening of the next `frames` rendered frames (each frame once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: dict[int, float] = {}
    while len(seen) < frames and loop.time() < deadline:
        frame = daemon.frames.latest
        if frame is not None and frame.params is not None:
            seen.setdefault(frame.index, float(frame.params.jaw[0]))
        await asyncio.sleep(0.02)
    assert len(seen) >= frames // 2, f"only {len(seen)} frames rendered in {timeout} s"
    return [seen[i] for i in sorted(seen)]


async def test_viewer_page_plays_the_avatar_and_talk_drives_it(tmp_path: Path) -> None:
    audio = {"source": "file", "file": str(tone_file(tmp_path)), "realtime": True, "loop": True}
    async with running_daemon(audio=audio) as daemon:
        browser = Browser(extra_flags=FAKE_MEDIA)
        await browser.start()
        try:
            page = await browser.open(base_url(daemon) + "/viewer")
            await page.wait_for("window.viewer && window.viewer.state === 'connected'", timeout=30)
            await page.wait_for("document.getElementById('video').videoWidth === 128", timeout=20)
            await page.wait_for("document.getElementById('video').currentTime > 0.5", timeout=20)
            # The audio track plays too: unmute (a real click) and the receiver decodes the tone.
            await page.click("#btn-play")
            stats = await page.wait_for(
                """(async () => { let a = null; (await window.viewer.pc.getStats()).forEach((r) => {
                     if (r.type === 'inbound-rtp' && r.kind === 'audio') a = r; });
                     return a && a.packetsReceived > 25 && a.totalSamplesReceived > 0 ? a : null; })()""",
                timeout=20)
            assert stats["totalSamplesReceived"] > 16000, stats
            level = await page.wait_for(
                """(async () => {
                     const ctx = window._ctx || (window._ctx = new AudioContext());
                     await ctx.resume();
                     const track = document.getElementById('video').srcObject.getAudioTracks()[0];
                     const src = ctx.createMediaStreamSource(new MediaStream([track]));
                     const an = ctx.createAnalyser(); src.connect(an);
                     await new Promise((r) => setTimeout(r, 300));
                     const buf = new Float32Array(an.fftSize); an.getFloatTimeDomainData(buf);
                     src.disconnect();
                     return Math.max(...buf.map(Math.abs)); })()""", timeout=10)
            assert level > 0.05, f"the browser decodes silence (peak {level})"
            await page.eval("document.getElementById('video').style.width = '512px'")
            shot = await page.send("Page.captureScreenshot", {"format": "png"})
            image = decode_png(base64.b64decode(shot["data"]))
            box = await page.eval("""(() => { const r = document.getElementById('video').getBoundingClientRect();
                                      return [r.x, r.y, r.width, r.height].map(Math.round); })()""")
            x, y, w, h = box
            video_px = image[y + 4 : y + h - 4, x + 4 : x + w - 4]
            (tmp_path / "viewer.png").write_bytes(base64.b64decode(shot["data"]))
            assert video_px.size and video_px.mean() > 30, f"the video area is black (mean {video_px.mean():.1f})"
            assert video_px.std() > 5, "the video area is one flat colour, not the avatar"
            assert hub_of(daemon).count == 1

            # Talk: the browser's microphone becomes the daemon's audio source and drives the pipeline.
            await page.click("#btn-talk")
            await page.wait_for("document.getElementById('btn-talk').textContent === 'stop talking'", timeout=20)
            await wait_until(lambda: daemon.audio_source.name == "webrtc", 10, "source switched to webrtc")
            sub = daemon.audio_in.subscribe(maxsize=200)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 15
                peak = 0.0
                while peak < 0.01 and loop.time() < deadline:
                    chunk = await loop.run_in_executor(None, sub.get, 0.5)
                    if chunk is not None:
                        peak = max(peak, float(np.abs(chunk.samples).max()))
                assert peak >= 0.01, "the browser microphone never reached the pipeline"
            finally:
                sub.close()
            # ...and moves the face: the jaw of the frames rendered from the microphone's beeps opens and closes
            # (idle motion is off, and the file source no longer feeds the face driver).
            jaw = await jaw_openings(daemon, frames=50, timeout=30)
            assert max(jaw) - min(jaw) > 0.1, f"the face does not move with the browser's voice: jaw {jaw}"
            await page.click("#btn-talk")
            await wait_until(lambda: daemon.audio_source.name == "file", 10, "source switched back")
        finally:
            await browser.close()
