"""Web pages against the daemon in headless Chromium: a page from another origin cannot puppet the avatar
(cross-site requests of every simple kind to every state-changing endpoint), a DNS-rebinding page cannot read
or write it, and a third-party WHEP player plays it only when the user allowed its origin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tests.conftest import needs_program
from tests.http.cdp import Browser, chromium_available
from tests.security.conftest import Origins
from tests.security.daemon import DaemonProcess, wait_for
from tests.security.pages import ATTACKS, RESOLVER_FLAGS

pytestmark = needs_program("chromium", "chromium chromium-driver", found=chromium_available())


def observable(daemon: DaemonProcess) -> dict[str, Any]:
    """Everything a successful cross-site request would have changed."""
    status = daemon.status()
    presets = daemon.get_json("/api/presets")
    return {
        "manual": daemon.state()["manual"],
        "frozen": status["frozen"],
        "muted": status["muted"],
        "audio_source": status["audio_source"],
        "idle": daemon.get_json("/api/idle"),
        "presets": sorted(p["name"] for p in presets["presets"]),
        "passthrough": daemon.get_json("/api/passthrough")["mode"],
        "background": daemon.get_json("/api/scene")["background"],
        "sessions": daemon.viewers()["sessions"],
        "midi": daemon.request("GET", "/api/midi").status,
    }


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium that resolves every *.example name to 127.0.0.1."""
    browser = Browser(extra_flags=RESOLVER_FLAGS)
    await browser.start()
    try:
        yield browser
    finally:
        await browser.close()


def refusals(daemon: DaemonProcess) -> int:
    counters = daemon.status()["counters"]
    return sum(v for k, v in counters.items() if k.startswith("policy/refused"))


async def test_a_cross_site_page_cannot_change_anything(daemon: DaemonProcess, origins: Origins) -> None:
    before = observable(daemon)
    refused_before = refusals(daemon)
    frames = daemon.frames()
    async with chromium() as browser:
        page = await browser.open(origins.attacker_origin + "/")
        await page.wait_for("typeof window.attack === 'function'")
        sent = await page.eval(f"window.attack({daemon.url!r})")
        # 12 endpoints x 4 body kinds + 10 JSON offers + 10 WHEP offers
        assert sent == len(ATTACKS) * 4 + 20
        # Every request reached the daemon and was refused by its policy (counted), none was served.
        await asyncio.to_thread(wait_for, lambda: refusals(daemon) - refused_before >= sent, 30,
                                "every cross-site request counted as refused")
        after = observable(daemon)
        assert after == before
        assert "blend/mouthPucker" not in after["manual"]
        assert after["sessions"] == 0
    daemon.assert_rendering(frames)


async def test_a_rebinding_page_cannot_read_or_write(daemon: DaemonProcess) -> None:
    """attacker.example resolves to 127.0.0.1 (as after a DNS rebinding): the page is same-origin with
    itself, so only the Host header tells the daemon that the request was meant for another site."""
    frames = daemon.frames()
    async with chromium() as browser:
        rebound = f"http://attacker.example:{daemon.port}"
        page = await browser.open(rebound + "/api/state")
        text = await page.wait_for("document.body && document.body.innerText")
        assert "manual" not in text and "Host" in text, text[:300]
        read = await page.eval("fetch('/api/state').then((r) => r.status)")
        assert read == 403
        wrote = await page.eval("""fetch('/api/control', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                   body: JSON.stringify({target: 'blend/mouthPucker', values: [1]})}).then((r) => r.status)""")
        assert wrote == 403
        assert "blend/mouthPucker" not in daemon.state()["manual"]
    daemon.assert_rendering(frames)


async def test_a_third_party_whep_player_needs_its_origin_allowed(daemon: DaemonProcess, origins: Origins) -> None:
    frames = daemon.frames()
    async with chromium() as browser:
        # Not allowed: the browser's CORS preflight is refused, the fetch fails, no session exists.
        stranger = await browser.open(origins.attacker_origin + "/")
        await stranger.wait_for("typeof window.whep === 'function'")
        refused = await stranger.eval(f"window.whep({daemon.url!r})")
        assert "status" not in refused and "Failed to fetch" in refused["error"], refused
        assert daemon.viewers()["count"] == 0

        # Allowed in http.allowed_origins: the player plays, reads Location and ETag, and hangs up with them.
        player = await browser.open(origins.player_origin + "/")
        await player.wait_for("typeof window.whep === 'function'")
        result = await player.eval(f"window.whep({daemon.url!r})")
        assert result.get("status") == 201, result
        assert result["location"].startswith("/whep/") and result["etag"], result
        await player.wait_for("window.pc.connectionState === 'connected'", timeout=30)
        await player.wait_for("window.framesDecoded().then((n) => n > 5)", timeout=30)
        assert daemon.viewers()["count"] == 1
        status = await player.eval(f"window.hangup({daemon.url!r}, {result['location']!r})")
        assert status == 200
        await asyncio.to_thread(wait_for, lambda: daemon.viewers()["count"] == 0, 20, "the session ended")
    daemon.assert_rendering(frames)
