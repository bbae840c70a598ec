"""The control panel in headless Chromium against a real daemon: real key presses and clicks through the
DevTools protocol, checked against the daemon's mixer and the frames it renders."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp
import numpy as np

from tests.conftest import needs_program
from tests.http.cdp import Browser, Page, chromium_available
from tests.http.conftest import running_daemon

pytestmark = needs_program("chromium", "chromium chromium-driver", found=chromium_available())


async def has_route(base: str, method: str, path: str) -> bool:
    async with aiohttp.ClientSession() as http, http.request(method, base + path, json={}) as r:
        return r.status != 404 and r.status != 405


async def frame_after(daemon: Any, index: int, timeout: float = 5.0) -> Any:
    """The first frame rendered after frame `index`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        frame = daemon.frames.latest
        if frame is not None and frame.index > index:
            return frame
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no frame after {index}")


async def wait_state(daemon: Any, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = daemon.mixer.state()
    while loop.time() < deadline:
        state = daemon.mixer.state()
        if predicate(state):
            return state
        await asyncio.sleep(0.02)
    raise TimeoutError(f"mixer state never matched; last: {json.dumps(state)[:600]}")


async def check_status_strip(page: Page) -> None:
    await page.wait_for("document.getElementById('st-conn').textContent === 'running'")
    fps = await page.wait_for(
        "(() => { const v = parseFloat(document.getElementById('st-fps').textContent); return v > 0 ? v : 0; })()"
    )
    assert 0 < fps <= 40  # flowing, and never faster than the clock (how fast is this machine's business)
    first = await page.eval("window.panel.status.frames")
    await page.wait_for(f"window.panel.status.frames > {first}")  # the numbers are live, not a snapshot
    stages = await page.eval("document.getElementById('st-stages').textContent")
    assert stages.strip(), "per-stage timings missing from the status strip"
    assert (await page.eval("document.getElementById('st-dropped').textContent")).isdigit()
    assert (await page.eval("document.getElementById('st-viewers').textContent")).isdigit()
    assert await page.eval("document.getElementById('st-g2g').textContent")


async def check_slider(page: Page, daemon: Any) -> None:
    target = "blend/jawOpen"
    selector = f'input[data-target="{target}"]'
    await page.wait_for(f"!!document.querySelector('{selector}')")
    before = await frame_after(daemon, -1)
    before = await frame_after(daemon, before.index)  # a frame fully rendered with the neutral mix
    jaw_before = list(daemon.mixer.state()["mixed"]["jaw"])
    await page.eval(f"document.querySelector('{selector}').focus()")
    await page.press("End", "End", 35)  # a real key press: the range input jumps to its maximum
    assert await page.eval(f"document.querySelector('{selector}').value") == "1"
    state = await wait_state(daemon, lambda s: s["manual"].get(target) == 1.0)
    state = await wait_state(daemon, lambda s: s["mixed"]["jaw"] != jaw_before)
    assert state["mixed"]["jaw"][0] > jaw_before[0] + 0.05, (jaw_before, state["mixed"]["jaw"])
    # The next rendered frame shows it: other parameters and pixels than before the key press.
    after = await frame_after(daemon, before.index + 1)
    await wait_state(daemon, lambda s: s["mixed"]["pts"] >= after.pts)
    after = await frame_after(daemon, after.index)
    assert after.params is not None and before.params is not None
    assert after.params.jaw[0] > before.params.jaw[0] + 0.05
    assert not np.array_equal(after.rgb, before.rgb), "the slider did not change the rendered frame"


async def check_preset_fade(page: Page, daemon: Any) -> None:
    names = await page.wait_for("window.panel.vocabulary && window.panel.vocabulary.presets.length && "
                                "window.panel.vocabulary.presets")
    name = names[0]
    # A 1.2 s fade, set with the panel's own fade slider.
    await page.eval("(() => { const f = document.getElementById('fade'); f.value = 1.2;"
                    " f.dispatchEvent(new Event('input')); })()")
    await page.click(f'button[data-target="preset/{name}"]')
    seen: list[float] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6.0
    while loop.time() < deadline:
        level = daemon.mixer.state()["manual"].get(f"preset/{name}", 0.0)
        seen.append(level)
        if level >= 0.999:
            break
        await asyncio.sleep(0.05)
    assert seen[-1] >= 0.999, f"preset {name} never reached full weight: {seen[-5:]} {daemon.mixer.state()} {browser_errors(page)}"
    middle = [v for v in seen if 0.05 < v < 0.95]
    assert len(middle) >= 3, f"no fade observed, levels {seen}"
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(seen)), "the fade is not monotonic"
    await page.wait_for(f"document.querySelector('button[data-target=\"preset/{name}\"]').classList"
                        ".contains('active')", timeout=3)


async def test_panel_in_chromium() -> None:
    async with running_daemon() as daemon:
        base = f"http://127.0.0.1:{daemon.http_port}"
        browser = Browser()
        await browser.start()
        try:
            page = await browser.open(f"{base}/")
            await page.wait_for("window.panel && window.panel.ready", timeout=30)
            arkit = await page.eval("document.querySelectorAll('#tab-arkit input[type=range]').length")
            flame = await page.eval("document.querySelectorAll('#tab-flame input[type=range]').length")
            assert arkit == 52 and flame > 100
            await check_status_strip(page)
            for path in ("/api/control", "/api/webrtc/offer"):  # what the panel posts to
                assert await has_route(base, "POST", path), f"the panel's route POST {path} is gone"
            await check_slider(page, daemon)
            await check_preset_fade(page, daemon)
            await page.wait_for("document.getElementById('preview').videoWidth > 0", timeout=20)
        finally:
            await browser.close()


def browser_errors(page: Page) -> list[str]:
    return page.browser.console[-5:]
