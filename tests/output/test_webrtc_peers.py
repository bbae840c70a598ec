"""Two real aiortc peers on loopback: the daemon's viewer endpoint and a client; frames and audio arrive, pts
are monotonic and lips and voice reach the viewer within one frame of each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.conftest import REPO, write_audio_file
from tests.output.conftest import (
    base_url,
    hub_of,
    running_daemon,
    server_tracks,
    viewer_of,
    wait_until,
    watch,
)


def tone_file(tmp_path: Path) -> Path:
    rate = 16_000
    t = np.arange(rate * 2) / rate
    return write_audio_file(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def arrival_offset(entries: list[tuple[float, int, Any]], first_media: float) -> float:
    """When media time 0 arrives (monotonic seconds minus media seconds), taken at the least-delayed frame."""
    return min(arrival - (first_media + float(pts * tb)) for arrival, pts, tb in entries)


async def test_two_peers_frames_audio_and_sync(tmp_path: Path) -> None:
    audio = {"source": "file", "file": str(tone_file(tmp_path)), "realtime": True, "loop": True}
    async with running_daemon(audio=audio) as daemon, viewer_of(daemon) as viewer:
        media = viewer.media
        await wait_until(lambda: len(media.video) >= 25 and len(media.audio) >= 50, 120, "25 frames and 1 s of audio")
        video_track, audio_track = server_tracks(daemon, viewer)

        video_pts = [pts for _, pts, _ in media.video]
        audio_pts = [pts for _, pts, _ in media.audio]
        assert np.all(np.diff(video_pts) > 0), "video pts not strictly increasing"
        assert np.all(np.diff(audio_pts) > 0), "audio pts not strictly increasing"
        assert media.video[0][2] * 90_000 == 1 and media.audio[0][2] * 48_000 == 1  # 90 kHz and 48 kHz clocks
        # 25 fps at 90 kHz: steps of 3600 ticks, or whole multiples where a frame was skipped (a slow machine)
        steps = np.diff(video_pts)
        assert steps.min() >= 3600 and np.all(steps % 3600 == 0), steps
        assert media.audio_peak > 0.1, "the tone did not reach the viewer"
        assert media.last_image.width == 128 and media.last_image.height == 128

        # On the wire: media time T of both tracks is handed over at the same moment (what the RTCP sender
        # reports tell a browser, which syncs by them), apart from how late the renderer delivered the
        # pictures: that is the machine's speed, which this output cannot make up for (on a calm machine ~0).
        late = float(np.median(video_track.render_late))
        sent_offset = float(np.median(video_track.lag) - np.median(audio_track.lag))
        assert abs(sent_offset - late) < 1.0 / 25, (
            f"video leaves {sent_offset * 1000:.1f} ms after its audio, rendered {late * 1000:.1f} ms late")
        # At this viewer, by arrival: aiortc's receiver holds audio in a jitter buffer of up to 4 packets
        # (80 ms) before decoding, and does no RTCP lip sync; that hold is the allowance beyond one frame.
        offset = arrival_offset(media.video, video_track.first_media_time) - arrival_offset(
            media.audio, audio_track.first_media_time)
        allowed = 1.0 / 25 + 0.080
        assert -allowed < offset < allowed + max(late, 0.0), f"A/V offset at the viewer {offset * 1000:.1f} ms"
        # Glass-to-glass latency of the WebRTC output is measured and reported.
        g2g = daemon.stats.snapshot()["stages"]["g2g:webrtc"]
        assert g2g["count"] > 10 and g2g["p50_ms"] > 0


async def test_status_counts_viewers_and_a_stalled_viewer_does_not_slow_others() -> None:
    async with running_daemon() as daemon:
        url = base_url(daemon)
        first = await watch(url)
        second = await watch(url)
        try:
            await wait_until(lambda: len(first.media.video) > 5 and len(second.media.video) > 5, 60, "both viewers")
            async with aiohttp.ClientSession() as http, http.get(url + "/api/status") as r:
                assert (await r.json())["viewers"] == 2
            # Stall the first viewer: stop reading its track. The second still gets every frame the shared
            # encoder makes (counted, not timed: a slow machine makes fewer frames, never a different count).
            for task in first.tasks:
                task.cancel()
            track, _ = server_tracks(daemon, second)
            encoder = track.encoder
            encoded, sent, decoded = encoder.encoded, track.sent, len(second.media.video)
            await wait_until(lambda: encoder.encoded >= encoded + 30, 120, "30 more frames encoded")
            made, passed = encoder.encoded - encoded, track.sent - sent
            assert passed >= made - 3, f"the second viewer was sent {passed} of {made} frames"
            await wait_until(lambda: len(second.media.video) >= decoded + made - 6, 60, "the second viewer decoding")
        finally:
            await first.close()
            await second.close()
        await wait_until(lambda: hub_of(daemon).count == 0, 10, "both viewers closed")


async def test_bad_offers_get_clear_errors() -> None:
    async with running_daemon(webrtc={"max_viewers": 1}) as daemon, aiohttp.ClientSession() as http:
        url = base_url(daemon)
        async with http.post(url + "/api/webrtc/offer", data=b"not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "JSON" in (await r.json())["error"]
        async with http.post(url + "/api/webrtc/offer", json={"sdp": "hello", "type": "offer"}) as r:
            body = await r.json()
            assert r.status == 400 and "v=0" in body["error"] and body["fix"]
        async with http.post(url + "/whep", data="v=0", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 403 and "application/sdp" in (await r.json())["fix"]
        async with http.delete(url + "/whep/nope") as r:
            assert r.status == 404
        viewer = await watch(url)
        try:
            with pytest.raises(AssertionError, match="max_viewers"):
                await watch(url)
        finally:
            await viewer.close()


def test_the_webrtc_stack_loads_with_the_hub_not_on_the_first_offer() -> None:
    """Importing aiortc and the crypto backend holds the interpreter lock for hundreds of milliseconds; done on
    the first viewer's offer it made that moment's frames late. The hub loads it when the daemon starts."""
    code = """
import sys
from bridge.core.config import load_config
from drivers.output.webrtc.peers import ViewerHub
offer_path = ("aiortc", "drivers.output.webrtc.tracks", "drivers.output.webrtc.fanout",
              "drivers.output.webrtc.dtls", "cryptography.hazmat.primitives.serialization")
before = [m for m in offer_path if m in sys.modules]
ViewerHub(hub=None, settings=load_config(None, environ={}).webrtc)
after = [m for m in offer_path if m in sys.modules]
print(len(before), len(after), len(offer_path))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         check=True).stdout.split()
    before, after, wanted = map(int, out)
    assert before < wanted, "the module alone already loads the stack: this test would prove nothing"
    assert after == wanted
