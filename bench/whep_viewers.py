"""WHEP viewers in a process of their own, standing for remote browsers in benchmarks of the daemon.

A viewer's receiving, depacketising and decoding run on its own interpreter, so they neither take the measured
process's cores nor its interpreter lock. Started with the WHEP URLs to watch, it connects one aiortc viewer to
each, prints `READY` and the JSON list of the resources' Locations, and from then on notes when each video
frame is complete (its marker packet arrives: where a browser's jitter buffer hands it to the decoder) and when
frames are decoded. A line `stop` (or the end of its input) ends it: it prints `VIEWERS` and a JSON list, one
entry per viewer, of `complete` ([monotonic arrival, seconds since the first complete frame by RTP]) and
`decoded` (frames decoded). time.monotonic() is the same clock in every process of the machine.

    python bench/whep_viewers.py http://127.0.0.1:8765/whep http://127.0.0.1:8765/sessions/ab12/whep
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

READY = "READY "
RESULT = "VIEWERS "


@dataclass
class WhepViewer:
    """One viewer: when each video frame was complete (its marker packet: where a browser's jitter buffer hands
    it to the decoder; aiortc's own hands a frame on only when the next frame's first packet arrives) and when
    each video and audio frame was decoded, as (time.monotonic(), seconds by RTP since the first)."""

    pc: Any = None
    location: str = ""
    complete: list[tuple[float, float]] = field(default_factory=list)
    video: list[tuple[float, float]] = field(default_factory=list)  # decoded: (arrival, its pts)
    audio: list[tuple[float, float]] = field(default_factory=list)
    first_rtp: int | None = None  # RTP timestamp of the first complete frame
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def connect(url: str, viewer: WhepViewer) -> None:
    """Offer to the WHEP endpoint `url` and start receiving."""
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    pc = RTCPeerConnection()
    viewer.pc = pc
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    pc.addTransceiver("audio", direction="recvonly")
    handle_rtp = receiver._handle_rtp_packet

    async def timed(packet: Any, arrival_time_ms: int) -> None:
        if packet.marker:  # timed from the first frame, as aiortc times decoded frames
            if viewer.first_rtp is None:
                viewer.first_rtp = packet.timestamp
            viewer.complete.append((time.monotonic(), ((packet.timestamp - viewer.first_rtp) % 2**32) / 90000.0))
        await handle_rtp(packet, arrival_time_ms)

    receiver._handle_rtp_packet = timed  # type: ignore[method-assign]  # the measuring client, not the daemon

    async def consume(track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                entry = (time.monotonic(), float(frame.pts * frame.time_base))
                (viewer.video if track.kind == "video" else viewer.audio).append(entry)

    @pc.on("track")
    def on_track(track: Any) -> None:
        viewer.tasks.append(asyncio.get_running_loop().create_task(consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http, http.post(
            url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r:
        if r.status != 201:
            raise RuntimeError(f"WHEP at {url} answered {r.status}: {await r.text()}")
        viewer.location = r.headers.get("Location", "")
        answer = await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


async def close(viewer: WhepViewer) -> None:
    for task in viewer.tasks:
        task.cancel()
    for task in viewer.tasks:
        with contextlib.suppress(BaseException):
            await task
    if viewer.pc is not None:
        await viewer.pc.close()


async def run(urls: Sequence[str]) -> int:
    viewers = [WhepViewer() for _ in urls]
    try:
        await asyncio.gather(*(connect(u, v) for u, v in zip(urls, viewers)))
        print(READY + json.dumps([v.location for v in viewers]), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "stop":
                break
        print(RESULT + json.dumps([{"complete": v.complete, "decoded": len(v.video)} for v in viewers]), flush=True)
    finally:
        for v in viewers:
            await close(v)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("urls", nargs="+", help="WHEP endpoints, one viewer each")
    args = p.parse_args(argv)
    return asyncio.run(run(args.urls))


if __name__ == "__main__":
    sys.exit(main())
