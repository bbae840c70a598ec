"""The /obs page (made for OBS's browser source) in headless Chromium against a real daemon: it plays WHEP with
packed alpha, unpacks it in WebGL onto a transparent page (a screenshot with a transparent page background is
transparent away from the head and opaque on it), takes ?token=, and reconnects by itself when the daemon
restarts. The viewer page's ?alpha=1 shows the same unpacked picture."""

from __future__ import annotations

import base64
import io
from typing import Any

import av
import numpy as np

from tests.conftest import needs_program
from tests.http.cdp import Browser, Page, chromium_available
from tests.output.conftest import hub_of, running_daemon, wait_until

pytestmark = needs_program("chromium", "chromium chromium-driver", found=chromium_available())

TOKEN = "obs-t0ken"
SIZE = 256  # the browser source's size: the 128 x 128 avatar drawn at twice its size


def decode_rgba(png: bytes) -> np.ndarray:
    with av.open(io.BytesIO(png), format="png_pipe") as container:
        return np.asarray(next(container.decode(video=0)).to_ndarray(format="rgba"))


def grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation by a (2 steps + 1) square."""
    out = mask.copy()
    for _ in range(steps):
        padded = np.pad(out, 1)
        out = np.zeros_like(out)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                out |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


async def screenshot(page: Page) -> np.ndarray:
    shot = await page.send("Page.captureScreenshot", {"format": "png"})
    return decode_rgba(base64.b64decode(shot["data"]))


async def playing(page: Page, condition: str, timeout: float) -> None:
    """Wait for `condition` on the page; on a timeout, say what the page and its video were doing."""
    try:
        await page.wait_for(condition, timeout=timeout)
    except TimeoutError as exc:
        state = await page.eval("JSON.stringify({state: window.obs && window.obs.state, frames: window.obs && "
                                "window.obs.frames, error: window.obs && window.obs.error, video: "
                                "[document.getElementById('video').readyState, document.getElementById('video')"
                                ".currentTime]})")
        raise TimeoutError(f"{exc}; page: {state}") from exc


async def transparent_page(browser: Browser, url: str) -> Page:
    page = await browser.open("about:blank")
    await page.send("Emulation.setDeviceMetricsOverride",
                    {"width": SIZE, "height": SIZE, "deviceScaleFactor": 1, "mobile": False})
    await page.send("Emulation.setDefaultBackgroundColorOverride", {"color": {"r": 0, "g": 0, "b": 0, "a": 0}})
    await page.send("Page.navigate", {"url": url})
    return page


async def test_obs_page_draws_the_head_on_transparency_and_reconnects() -> None:
    # The default config (no avatar.transparent): the page's packed-alpha stream makes the avatar render alpha.
    overrides: dict[str, Any] = {"http": {"token": TOKEN}}
    browser = Browser()
    await browser.start()
    try:
        async with running_daemon(**overrides) as daemon:
            port = daemon.http_port
            page = await transparent_page(browser, f"http://127.0.0.1:{port}/obs?token={TOKEN}")
            await playing(page, "window.obs && window.obs.frames > 3", 120)
            assert await page.eval("[window.obs.size, window.obs.error]") == [[128, 128 * 2 + 16], None]
            image = await screenshot(page)
            # Over white: what OBS shows over a bright scene. Premultiplied colour composites as c + (1 - a) white.
            await page.send("Emulation.setDefaultBackgroundColorOverride",
                            {"color": {"r": 255, "g": 255, "b": 255, "a": 1}})
            frames = await page.eval("window.obs.frames")
            await playing(page, f"window.obs.frames > {frames + 2}", 60)
            over_white = (await screenshot(page))[..., :3].astype(np.float32)
            last = daemon.pipeline.last_frame  # the idle head holds still
            truth, rgb = last.alpha, last.premultiplied()
            assert truth is not None
            # The viewer page's alpha option: packed alpha, unpacked the same way, over a checkerboard.
            viewer = await browser.open(f"http://127.0.0.1:{port}/viewer?alpha=1&token={TOKEN}")
            await viewer.wait_for("window.viewer && window.viewer.alphaFrames > 3", timeout=60)
            assert await viewer.eval("[document.getElementById('canvas').width, "
                                     "document.getElementById('canvas').height]") == [128, 128]
            await viewer.send("Page.navigate", {"url": "about:blank"})  # leaves (DELETEs its session)
            await wait_until(lambda: hub_of(daemon).count == 1, 20, "the viewer page gone")
            await page.send("Page.bringToFront")  # a background tab draws nothing (as a hidden OBS source)
        assert image.shape == (SIZE, SIZE, 4)
        shown = image[..., 3].astype(int)
        # The reference alpha, at the page's scale; margins keep the comparison off the head's soft edge.
        scaled = np.repeat(np.repeat(truth, 2, axis=0), 2, axis=1)
        far = ~grow(scaled > 0, 8)
        head = ~grow(scaled < 255, 8)
        assert far.mean() > 0.2 and head.mean() > 0.05, "the test picture has no clear head and background"
        assert shown[far].max() < 16, f"alpha {shown[far].max()} away from the head (page not transparent)"
        ys, xs = np.nonzero(head)
        centre = shown[int(ys.mean()) - 2 : int(ys.mean()) + 3, int(xs.mean()) - 2 : int(xs.mean()) + 3]
        assert centre.min() > 240, f"alpha {centre.min()} at the head centre"
        assert np.median(shown[head]) > 245
        # The head has its own colour (PNG stores it unpremultiplied; where alpha is 255 the two agree).
        colour = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1).astype(int)
        assert np.abs(image[..., :3].astype(int)[head] - colour[head]).mean() < 12
        # Soft edges composite as the renderer blended them: premultiplied colour plus (1 - alpha) background.
        expected = rgb.astype(np.float32) + (255.0 - truth.astype(np.float32))[..., None]
        seen = over_white.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
        edge = (truth > 20) & (truth < 235)
        err = np.abs(seen - expected)
        assert err.mean() < 6 and err[edge].mean() < 20, (err.mean(), err[edge].mean())

        # The daemon restarts on the same port: the page connects again by itself and plays.
        before = await page.eval("window.obs.frames")
        async with running_daemon(**{**overrides, "http": {"token": TOKEN, "port": port}}) as daemon:
            await playing(page, f"window.obs.reconnects >= 1 && window.obs.frames > {before + 3}", 120)
            await wait_until(lambda: hub_of(daemon).count == 1, 20, "the page watching the new daemon")
            assert await page.eval("window.obs.error") is None
    finally:
        await browser.close()
