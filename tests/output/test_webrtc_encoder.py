"""The shared video encoder on its own (real libvpx/libx264 through PyAV, frames published by the test):
one encode per frame for any number of subscribers, keyframes for newcomers and requests at a bounded rate,
a stalled subscriber losing only its own frames, and a viewer's track resynchronising at a keyframe."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import av
import numpy as np
import pytest

from bridge.core.fanout import Broadcast
from bridge.core.interfaces import AudioChunk, VideoFrame
from drivers.output.webrtc.encoder import VideoEncoder
from drivers.output.webrtc.fanout import MediaFanout
from drivers.output.webrtc.tracks import EncodedVideoTrack
from tests.output.conftest import wait_until


def picture(index: int, size: int = 64) -> VideoFrame:
    rng = np.random.default_rng(index)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8), 8, 0), 8, 1)
    return VideoFrame(rgb=rgb, pts=index / 25, index=index)


async def publish_and_wait(frames: Broadcast[VideoFrame], encoder: VideoEncoder, index: int) -> None:
    """One frame, then wait until the encoder took it (so none is skipped by latest-wins)."""
    before = encoder.encoded
    frames.publish(picture(index))
    await wait_until(lambda: encoder.encoded > before, 20, f"frame {index} encoded")


def decode_all(codec: str, items: list[Any]) -> int:
    decoder = av.CodecContext.create("libvpx" if codec == "vp8" else "h264", "r")
    return sum(len(decoder.decode(av.Packet(item.data))) for item in items)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_one_encode_serves_every_subscriber(codec: str) -> None:
    loop = asyncio.get_running_loop()
    frames: Broadcast[VideoFrame] = Broadcast()
    encoder = VideoEncoder(frames, codec, 500_000, 25)
    encoder.start()
    try:
        subs = [encoder.subscribe(loop) for _ in range(4)]
        got: list[list[Any]] = [[] for _ in subs]
        for i in range(12):
            await publish_and_wait(frames, encoder, i)
            for sub, items in zip(subs, got, strict=True):
                item = await asyncio.wait_for(sub.aget(), 10)
                items.append(item)
        assert encoder.encoded == 12  # one encode per frame, not one per subscriber
        assert all(items == got[0] for items in got)  # every subscriber got the very same encoded frames
        assert got[0][0].keyframe and [it.seq for it in got[0]] == list(range(12))
        assert encoder.keyframe_requests["subscriber"] == 4 and encoder.forced_keyframes == 1
        assert all(decode_all(codec, items) == 12 for items in got)
    finally:
        encoder.stop()
        encoder.join()


async def test_keyframe_requests_are_honoured_at_a_bounded_rate() -> None:
    loop = asyncio.get_running_loop()
    clock = FakeClock()
    frames: Broadcast[VideoFrame] = Broadcast()
    encoder = VideoEncoder(frames, "vp8", 500_000, 25, min_keyframe_gap=0.5, clock=clock)
    encoder.start()
    try:
        sub = encoder.subscribe(loop)
        keys = []
        for i in range(30):
            if i in (5, 6, 7, 8, 12, 20):  # a burst of requests, a late one, and one after the gap
                encoder.request_keyframe("pli")
            await publish_and_wait(frames, encoder, i)
            keys.append((await asyncio.wait_for(sub.aget(), 10)).keyframe)  # type: ignore[union-attr]
            clock.t += 0.04  # 25 fps
        # frame 0: the subscriber's; 5-8: one keyframe for the burst (0.2 s after frame 0's, so it waits
        # until 0.5 s have passed: frame 13); 20: the next one once the gap has passed again.
        assert [i for i, k in enumerate(keys) if k] == [0, 13, 26]
        assert encoder.forced_keyframes == 3 and encoder.keyframe_requests["pli"] == 6
    finally:
        encoder.stop()
        encoder.join()


async def test_a_stalled_subscriber_loses_only_its_own_frames() -> None:
    loop = asyncio.get_running_loop()
    frames: Broadcast[VideoFrame] = Broadcast()
    encoder = VideoEncoder(frames, "vp8", 500_000, 25)
    encoder.start()
    try:
        reader = encoder.subscribe(loop)
        stalled = encoder.subscribe(loop)  # never read
        received = 0
        for i in range(20):
            await publish_and_wait(frames, encoder, i)
            assert await asyncio.wait_for(reader.aget(), 10) is not None
            received += 1
        assert received == 20 and encoder.encoded == 20 and reader.dropped == 0
        assert stalled.dropped == 20 - 3  # its queue holds the newest three
    finally:
        encoder.stop()
        encoder.join()


async def test_a_viewer_track_starts_and_resumes_at_keyframes() -> None:
    frames: Broadcast[VideoFrame] = Broadcast()
    audio: Broadcast[AudioChunk] = Broadcast()
    fanout = MediaFanout(frames, audio, time.monotonic, fps=25, bitrate_kbps=500, tiers=1)
    stop = threading.Event()

    def produce() -> None:  # a steady 25 fps source, as the pipeline is
        i = 0
        while not stop.is_set():
            frames.publish(picture(i))
            i += 1
            time.sleep(0.04)

    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()
    track = EncodedVideoTrack(fanout, "vp8", False, asyncio.get_running_loop(), time.monotonic)
    try:
        encoder = track.encoder
        first = await asyncio.wait_for(track.recv(), 20)
        assert first.is_keyframe and track.keyframes_sent == 1
        for _ in range(5):
            await asyncio.wait_for(track.recv(), 20)
        # The viewer stalls (its sender stops asking for frames) while the encoder goes on.
        encoded = encoder.encoded
        await wait_until(lambda: encoder.encoded >= encoded + 10, 30, "ten frames encoded meanwhile")
        packet = await asyncio.wait_for(track.recv(), 20)
        # It lost frames from its queue, so it skipped to a keyframe it asked for instead of sending frames
        # that refer to pictures its receiver never got.
        assert track.lost >= 7 and packet.is_keyframe and track.keyframes_sent == 2
        assert encoder.keyframe_requests["loss"] >= 1
        assert fanout.video_encoders == [encoder]
    finally:
        track.stop()
        stop.set()
        feeder.join()
        fanout.close()
    assert fanout.video_encoders == [] and frames.subscriber_count <= 1  # the encoder's own, on its way out
