"""Encode once, fan out, with real aiortc viewers on loopback: several viewers decode video and audio from one
encoder each, a late joiner starts on a keyframe within a few frames, PLI forces a keyframe (a burst of them
costs at most two), a congested viewer moves down a bitrate tier and keeps playing, and packed alpha is asked
for per viewer (VP8 and H.264)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from drivers.output.webrtc.encoder import MIN_KEYFRAME_GAP_S
from drivers.output.webrtc.packed_alpha import packed_height, unpack_rgb
from tests.output.conftest import Viewer, base_url, hub_of, running_daemon, server_tracks, wait_until, watch
from tests.output.test_webrtc_peers import tone_file


def video_receiver(viewer: Viewer) -> tuple[Any, int]:
    """The client's video receiver and the SSRC the daemon sends it from."""
    receiver = next(r for r in viewer.pc.getReceivers() if r.track.kind == "video")
    sources = receiver.getSynchronizationSources()
    assert sources, "no video packets arrived yet"
    return receiver, sources[0].source


def without_abs_send_time(sdp: str) -> str:
    """An offer whose receiver cannot estimate bandwidth (no abs-send-time), so it sends no REMB of its own."""
    return re.sub(r"a=extmap:\d+ http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n", "", sdp)


async def close_all(viewers: list[Viewer]) -> None:
    for viewer in viewers:
        with contextlib.suppress(Exception):
            await viewer.close()


async def test_many_viewers_share_one_video_and_one_audio_encoder(tmp_path: Path) -> None:
    audio = {"source": "file", "file": str(tone_file(tmp_path)), "realtime": True, "loop": True}
    async with running_daemon(audio=audio) as daemon:
        url, hub = base_url(daemon), hub_of(daemon)
        viewers = [await watch(url, mode) for mode in ("json", "whep", "json", "whep")]
        try:
            await wait_until(lambda: all(len(v.media.video) >= 15 and len(v.media.audio) >= 25 for v in viewers),
                             90, "every viewer decoding video and audio")
            fanout = hub.fanout
            assert len(fanout.video_encoders) == 1 and fanout.audio_encoder is not None
            encoder = fanout.video_encoders[0]
            tracks = [server_tracks(daemon, v) for v in viewers]
            assert encoder.subscribers == 4 and fanout.audio_encoder.subscribers == 4
            video_sent = sum(t[0].sent for t in tracks)
            audio_sent = sum(t[1].sent for t in tracks)
            # One encode per rendered frame serves everyone: per-viewer encoding would need an encode for every
            # frame sent (and so more encodes than any one viewer's count times the number of viewers allows).
            assert encoder.encoded <= daemon.pipeline.frames_rendered
            assert video_sent > encoder.encoded, (video_sent, encoder.encoded)
            assert audio_sent > fanout.audio_encoder.encoded, (audio_sent, fanout.audio_encoder.encoded)
            for viewer, (video, _) in zip(viewers, tracks, strict=True):
                assert video.keyframes_sent >= 1 and video.first_media_time is not None
                assert viewer.media.last_image.width == 128 and viewer.media.last_image.height == 128
                assert viewer.media.audio_peak > 0.1, "the tone did not reach a viewer"
        finally:
            await close_all(viewers)
        await wait_until(lambda: hub.count == 0, 20, "viewers closed")
        # Nobody watches: the encoders stop (they start again for the next viewer).
        await wait_until(lambda: not hub.fanout.video_encoders and hub.fanout.audio_encoder is None, 20,
                         "encoders stopped")


async def test_late_viewer_starts_on_a_keyframe_and_pli_forces_one() -> None:
    async with running_daemon(webrtc={"tiers": 1}) as daemon:  # one tier: every viewer on one encoder
        url = base_url(daemon)
        first = await watch(url)
        viewers = [first]
        try:
            await wait_until(lambda: len(first.media.video) >= 20, 90, "the first viewer playing")
            encoder = hub_of(daemon).fanout.video_encoders[0]
            forced = encoder.forced_keyframes
            late = await watch(url, "whep")
            viewers.append(late)
            await wait_until(lambda: len(late.media.video) >= 3, 60, "the late viewer decoding")
            track, _ = server_tracks(daemon, late)
            # It decoded from the first frame it was sent, a keyframe forced for it: the frames it had to let
            # pass are at most those of one keyframe gap (0.5 s at 25 fps) and the one in flight.
            assert track.keyframes_sent >= 1 and track.waited <= 14, track.waited
            assert encoder.forced_keyframes > forced and encoder.keyframe_requests["subscriber"] >= 2

            # PLI from the late viewer's receiver (a real RTCP packet over the connection): a keyframe follows.
            receiver, ssrc = video_receiver(late)
            keys, forced = track.keyframes_sent, encoder.forced_keyframes
            sent = time.monotonic()
            for _ in range(5):  # a burst, as a receiver recovering from loss sends
                await receiver._send_rtcp_pli(ssrc)
            await wait_until(lambda: track.pli == 5, 20, "the PLIs at the daemon")
            await wait_until(lambda: track.keyframes_sent > keys, 30, "a keyframe after the PLI")
            # Requests closer than MIN_KEYFRAME_GAP_S to a keyframe fold into it: the burst costs one or two
            # keyframes, and at most one more per gap that a loaded machine took to deliver it (counted, with
            # the time the burst took on this machine, so a slow run cannot fail it and a fast one is strict).
            cost, span = encoder.forced_keyframes - forced, time.monotonic() - sent
            assert encoder.keyframe_requests["pli"] == 1 and track.pli_ignored == 4  # one per PLI_GAP_S
            assert 1 <= cost <= 2 + int(span / MIN_KEYFRAME_GAP_S), \
                f"a burst of PLIs over {span:.2f} s cost {cost} keyframes"
            count = len(late.media.video)
            await wait_until(lambda: len(late.media.video) >= count + 5, 60, "frames after the keyframe")
            assert len(first.media.video) > 20 and hub_of(daemon).fanout.video_encoders == [encoder]
        finally:
            await close_all(viewers)


async def test_a_congested_viewer_moves_down_a_tier_and_keeps_playing(tmp_path: Path) -> None:
    audio = {"source": "file", "file": str(tone_file(tmp_path)), "realtime": True, "loop": True}
    async with running_daemon(audio=audio, webrtc={"tiers": 3}) as daemon:
        url = base_url(daemon)
        fanout = hub_of(daemon).fanout
        good = await watch(url)
        slow = await watch(url, munge=without_abs_send_time)
        viewers = [good, slow]
        task: asyncio.Task[None] | None = None
        try:
            await wait_until(lambda: len(good.media.video) >= 5 and len(slow.media.video) >= 5, 90, "both playing")
            track, _ = server_tracks(daemon, slow)
            track.policy.hold = track.policy.settle = 0.5  # quicker steps; the rule is the same
            receiver, ssrc = video_receiver(slow)

            async def congested() -> None:  # the slow viewer's receiver keeps detecting overuse
                estimate = 50_000.0
                while True:  # falling 5 % a report, from above any stream of this size to nothing
                    estimate = estimate * 0.95 if estimate > 2 else 50_000.0
                    fci = pack_remb_fci(int(estimate), [ssrc])
                    await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=fci))
                    await asyncio.sleep(0.1)

            task = asyncio.get_running_loop().create_task(congested())
            await wait_until(lambda: track.tier == 2, 90, "the slow viewer on the bottom tier")
            assert track.remb is not None and track.policy.changes == 2
            assert track.encoder.bitrate == fanout.bitrates[2] == 625_000
            count = len(slow.media.video)
            await wait_until(lambda: len(slow.media.video) >= count + 10, 60, "frames on the bottom tier")
            good_count = len(good.media.video)
            await wait_until(lambda: len(good.media.video) >= good_count + 10, 60, "the other viewer playing")
            # Only tiers somebody watches are encoded: the middle one stopped when the slow viewer left it.
            rates = sorted(e.bitrate for e in fanout.video_encoders)
            assert fanout.bitrates[1] not in rates and fanout.bitrates[2] in rates
        finally:
            if task is not None:
                task.cancel()
            await close_all(viewers)


async def test_packed_alpha_per_viewer_and_clear_errors() -> None:
    async with running_daemon(avatar={"transparent": True}) as daemon:
        url = base_url(daemon)
        packed = await watch(url, "whep", alpha=True)
        plain = await watch(url, "json")
        viewers = [packed, plain]
        try:
            await wait_until(lambda: len(packed.media.video) >= 5 and len(plain.media.video) >= 5, 90, "both playing")
            image = packed.media.last_image
            assert (image.width, image.height) == (128, packed_height(128))
            assert (plain.media.last_image.width, plain.media.last_image.height) == (128, 128)
            names = sorted(e.name for e in hub_of(daemon).fanout.video_encoders)
            assert names == ["vp8+alpha@2500k", "vp8@2500k"]
            _, alpha = unpack_rgb(image.to_ndarray(format="rgb24"), 128)
            truth = daemon.pipeline.last_frame.alpha
            assert truth is not None and 0 < truth.mean() < 250
            assert np.abs(alpha.astype(int) - truth.astype(int)).mean() < 8  # the idle head barely moves
            assert alpha[truth == 0].max() < 32 and np.median(alpha[truth == 255]) > 245
            async with aiohttp.ClientSession() as http:
                async with http.post(url + "/whep?alpha=maybe", data="v=0\r\n",
                                     headers={"Content-Type": "application/sdp"}) as r:
                    body = await r.json()
                    assert r.status == 400 and "alpha" in body["error"] and "alpha=1" in body["fix"]
                async with http.get(url + "/api/webrtc/viewers") as r:
                    listing = await r.json()
                    assert sorted(v["alpha"] for v in listing["viewers"]) == [False, True]
                    assert len(listing["encoders"]["video"]) == 2
        finally:
            await close_all(viewers)


async def test_config_default_alpha_and_per_viewer_override_with_h264() -> None:
    async with running_daemon(webrtc={"alpha": True, "codec": "h264"}) as daemon:
        url = base_url(daemon)
        default = await watch(url, "whep")
        plain = await watch(url, "whep", alpha=False)
        try:
            await wait_until(lambda: len(default.media.video) >= 2 and len(plain.media.video) >= 2, 90, "playing")
            assert default.media.last_image.height == packed_height(128)
            assert plain.media.last_image.height == 128
            names = sorted(e.name for e in hub_of(daemon).fanout.video_encoders)
            assert names == ["h264+alpha@2500k", "h264@2500k"]
        finally:
            await close_all([default, plain])


async def test_one_viewers_pli_flood_raises_everyones_keyframe_rate_only_to_a_bounded_share() -> None:
    """Events, not speeds: forced keyframes per PLI_GAP_S of flood, whatever the number of PLIs (one every
    50 ms here; without the bound it forced one every MIN_KEYFRAME_GAP_S), and the other viewer plays on."""
    import time

    from drivers.output.webrtc.tracks import PLI_GAP_S

    async with running_daemon(webrtc={"tiers": 1}) as daemon:
        url = base_url(daemon)
        calm, flooder = await watch(url), await watch(url, "whep")
        try:
            await wait_until(lambda: len(calm.media.video) >= 10 and len(flooder.media.video) >= 3, 90,
                             "both viewers playing")
            encoder = hub_of(daemon).fanout.video_encoders[0]
            track, _ = server_tracks(daemon, flooder)
            receiver, ssrc = video_receiver(flooder)
            forced, frames, start = encoder.forced_keyframes, len(calm.media.video), time.monotonic()
            for _ in range(80):
                await receiver._send_rtcp_pli(ssrc)
                await asyncio.sleep(0.05)
            await wait_until(lambda: track.pli == 80, 30, "the PLIs at the daemon")
            elapsed = time.monotonic() - start
            caused = encoder.forced_keyframes - forced
            assert 1 <= caused <= elapsed / PLI_GAP_S + 2, (caused, elapsed)
            assert track.pli_ignored >= 80 - caused - 1
            assert len(calm.media.video) > frames, "the calm viewer stopped receiving"
        finally:
            await close_all([calm, flooder])
