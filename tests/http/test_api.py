"""The JSON API and /metrics of a real running daemon, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import math
import re

import aiohttp

from tests.http.conftest import running_daemon

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?,?\}})? (\S+)(?: (-?\d+))?$")
TYPES = {"counter", "gauge", "summary", "histogram", "untyped"}


def parse_prometheus(text: str) -> dict[str, dict[str, object]]:
    """A strict parser of the Prometheus text format 0.0.4; raises AssertionError on any deviation."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, dict[str, object]] = {}
    seen: set[tuple[str, str]] = set()
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            assert len(parts) >= 3 and re.fullmatch(NAME, parts[2]), f"line {n}: bad comment {line!r}"
            fam = families.setdefault(parts[2], {"samples": {}})
            if parts[1] == "TYPE":
                assert len(parts) == 4 and parts[3] in TYPES, f"line {n}: bad type {line!r}"
                assert "type" not in fam and not fam["samples"], f"line {n}: TYPE repeated or after samples"
                fam["type"] = parts[3]
            else:
                assert "help" not in fam, f"line {n}: HELP repeated"
                fam["help"] = parts[3] if len(parts) == 4 else ""
            continue
        assert line and not line.startswith("#"), f"line {n}: empty or stray comment {line!r}"
        m = SAMPLE.match(line)
        assert m, f"line {n}: not a sample {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert value in ("NaN", "+Inf", "-Inf") or re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value), (
            f"line {n}: bad value {value!r}"
        )
        family = next((f for f in (name, re.sub(r"_(sum|count|bucket)$", "", name)) if f in families), None)
        assert family is not None, f"line {n}: sample {name} before its TYPE"
        assert (name, labels) not in seen, f"line {n}: duplicate sample {name}{{{labels}}}"
        seen.add((name, labels))
        families[family]["samples"][labels] = float(value)  # type: ignore[index]
    return families


async def test_status_metrics_openapi_and_idle() -> None:
    async with running_daemon() as daemon, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{daemon.http_port}"
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # let frames flow
            async with http.get(f"{base}/api/status") as r:
                assert r.status == 200
                status = await r.json()
            if status["frames"] > 5 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert status["running"] is True
        assert status["target_fps"] == 25
        assert status["frames"] > 5
        assert 0.0 < status["fps"] <= 40.0, status["fps"]  # flowing, and never faster than the clock
        assert "render" in " ".join(status["stages"]) or status["stages"], status["stages"]
        assert status["viewers"] == 0

        async with http.get(f"{base}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        families = parse_prometheus(text)
        assert families["avatar_bridge_up"]["samples"] == {"": 1.0}
        assert families["avatar_bridge_fps"]["type"] == "gauge"
        assert families["avatar_bridge_frames_observed_total"]["type"] == "counter"
        assert families["avatar_bridge_frames_observed_total"]["samples"][""] > 5  # type: ignore[index]
        for value in families["avatar_bridge_stage_seconds"]["samples"].values():  # type: ignore[attr-defined]
            assert math.isfinite(value) and value >= 0

        async with http.get(f"{base}/api/openapi.json") as r:
            spec = await r.json()
        assert spec["openapi"].startswith("3.") and "/api/status" in spec["paths"]

        # Idle life goes through the mixer's control vocabulary.
        async with http.post(f"{base}/api/idle", json={"blink": True, "blink_amount": 0.5}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["blink"] is True
        if daemon.mixer is not None:
            for _ in range(50):
                if daemon.mixer.state()["idle"]["blink"] == 0.5:
                    break
                await asyncio.sleep(0.05)
            assert daemon.mixer.state()["idle"]["blink"] == 0.5

        # Bad input: a clear error, never a traceback.
        async with http.post(f"{base}/api/idle", json={"blinky": True}) as r:
            assert r.status == 400 and "blinky" in (await r.json())["error"]
        async with http.post(f"{base}/api/idle", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "JSON" in (await r.json())["error"]
        async with http.post(f"{base}/api/mute", json={"muted": "yes"}) as r:
            assert r.status == 400
        async with http.post(f"{base}/api/audio/source", json={"source": "telepathy"}) as r:
            assert r.status == 400 and "telepathy" in (await r.json())["error"]
        async with http.get(f"{base}/api/audio") as r:
            audio = await r.json()
        assert "silence" in audio["sources"] and audio["source"] == "silence"


async def test_token_required_when_bound_wide() -> None:
    token = "a-long-random-token-for-the-test"
    async with running_daemon(http={"host": "0.0.0.0", "token": token}) as daemon, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{daemon.http_port}"
        for path in ("/api/status", "/metrics", "/api/state", "/api/openapi.json"):
            async with http.get(base + path) as r:
                assert r.status == 401, path
                assert "token" in (await r.json())["error"]
        async with http.get(base + "/api/status", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with http.post(base + "/api/idle", json={"blink": False}) as r:
            assert r.status == 401
        async with http.get(base + "/health") as r:
            assert r.status == 200
        async with http.get(base + "/api/status", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        # The pages hold no data and load without the token; the page reads a token from its own address and
        # sends it as a header, so the server never writes it into the page.
        for path in (f"/panel/?token={token}", "/panel/panel.js", "/panel/token.js", f"/viewer?token={token}"):
            async with http.get(base + path) as r:
                assert r.status == 200, path
                assert token not in await r.text()
