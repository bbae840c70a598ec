"""Encoder CPU time with 1 and with 16 WebRTC viewers: encode once, fan out.

A real daemon (demo avatar, the embedded speech clip looping, HTTP on loopback) serves WHEP; the viewers are
real aiortc peers in another process (so their decoding is not counted), each decoding video and audio.
By default (`--source clip`) the daemon first renders a couple of seconds of the talking head, then holds its
renderer and the WebRTC encoders take those frames replayed at a steady 25 fps: the figures then do not
depend on how fast this machine renders (on a CPU-only machine, often far below 25 fps). `--source live`
feeds them the live renderer instead. For each viewer count it measures, over the same stretch of stream:

  video encode   CPU time of the shared encoder threads (thread CPU clock: conversion, packing, encoding)
  opus           CPU time of the shared Opus encoder thread
  process        CPU time of the whole daemon process (rendering, encoding, packetizing, SRTP, HTTP...)

and prints the ratio of video encode CPU per second at 16 viewers to 1 viewer (the goal: <= 1.3x). For
comparison it also times the previous path, one aiortc VP8 encoder per viewer, on the same frames.

    python bench/bench_webrtc_fanout.py                   # 512x512, 1 and 16 viewers, 15 s each
    python bench/bench_webrtc_fanout.py --size 256 --seconds 8 --viewers 1 4 16
    python bench/bench_webrtc_fanout.py --source live --tiers 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# --- the viewers' process ---------------------------------------------------------------------------------

def run_viewers(url: str, count: int, seconds: float, results: Any) -> None:
    """`count` aiortc WHEP viewers; reports how many frames each decoded in the last `seconds`."""
    asyncio.run(_viewers(url, count, seconds, results))


async def _viewers(url: str, count: int, seconds: float, results: Any) -> None:
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    pcs: list[Any] = []
    decoded = [0] * count
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: Any, i: int) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if track.kind == "video":
                    decoded[i] += 1

    async with aiohttp.ClientSession() as http:
        for i in range(count):
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            pc.on("track", lambda track, i=i: tasks.append(asyncio.get_running_loop().create_task(consume(track, i))))
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(url + "/whep", data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"}) as r:
                if r.status != 201:
                    raise SystemExit(f"WHEP refused viewer {i}: {r.status} {await r.text()}")
                answer = await r.text()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            pcs.append(pc)
        while min(decoded) < 5:  # everyone playing
            await asyncio.sleep(0.1)
        results.put(("playing", None))
        start = list(decoded)
        await asyncio.sleep(seconds)
        results.put(("decoded", [d - s for d, s in zip(decoded, start, strict=True)]))
        for task in tasks:
            task.cancel()
        for pc in pcs:
            await pc.close()


# --- the daemon's side -----------------------------------------------------------------------------------

class ClipPlayer:
    """Recorded frames replayed at `fps` on the media clock, in a loop, each stamped with its presentation time."""

    def __init__(self, frames: list[Any], now: Any, fps: int) -> None:
        from bridge.core.fanout import Broadcast

        self.output: Any = Broadcast()
        self._frames = frames
        self._now = now
        self._fps = fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clip", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from bridge.core.interfaces import VideoFrame

        origin = self._now()
        k = 0
        while not self._stop.is_set():
            due = origin + k / self._fps
            wait = due - self._now()
            if wait > 0 and self._stop.wait(wait):
                break
            if self._now() - due > 1.0 / self._fps:  # late: skip the slot, as the renderer would
                k += 1
                continue
            source = self._frames[k % len(self._frames)]
            self.output.publish(VideoFrame(rgb=source.rgb, pts=due, index=k, alpha=source.alpha))
            k += 1


async def record(daemon: Any, count: int) -> list[Any]:
    sub = daemon.frames.subscribe(maxsize=count)
    frames: list[Any] = []
    loop = asyncio.get_running_loop()
    while len(frames) < count:
        frame = await loop.run_in_executor(None, sub.get, 5.0)
        if frame is not None:
            frames.append(frame)
    sub.close()
    return frames

def viewers_of(daemon: Any) -> Any:
    """The daemon's WebRTC viewer hub (drivers.output.webrtc.peers.ViewerHub)."""
    return daemon.session.viewers


def cpu_of(hub: Any) -> tuple[float, int, float, int]:
    """(video encode CPU s, frames encoded, Opus CPU s, forced keyframes) of the running encoders."""
    video = hub.fanout.video_encoders
    audio = hub.fanout.audio_encoder
    return (sum(e.cpu_seconds for e in video), sum(e.encoded for e in video),
            audio.cpu_seconds if audio is not None else 0.0, sum(e.forced_keyframes for e in video))


async def measure(daemon: Any, count: int, seconds: float) -> dict[str, Any]:
    hub = viewers_of(daemon)
    url = f"http://127.0.0.1:{daemon.http_port}"
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=run_viewers, args=(url, count, seconds, results), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    kind, _ = await loop.run_in_executor(None, results.get, True, 300)
    assert kind == "playing"
    enc0, frames0, opus0, keys0 = cpu_of(hub)
    proc0, wall0, rendered0 = time.process_time(), time.monotonic(), daemon.pipeline.frames_rendered
    kind, decoded = await loop.run_in_executor(None, results.get, True, seconds + 120)
    enc1, frames1, opus1, keys1 = cpu_of(hub)
    proc1, wall1, rendered1 = time.process_time(), time.monotonic(), daemon.pipeline.frames_rendered
    keyframes = keys1 - keys0
    encoders = len(hub.fanout.video_encoders)
    await loop.run_in_executor(None, proc.join, 60)
    while hub.count:
        await asyncio.sleep(0.1)
    wall = wall1 - wall0
    return {"viewers": count, "wall": wall, "encode": (enc1 - enc0) / wall, "frames": frames1 - frames0,
            "opus": (opus1 - opus0) / wall, "process": (proc1 - proc0) / wall, "rendered": rendered1 - rendered0,
            "decoded": decoded, "encoders": encoders, "keyframes": keyframes}


def per_viewer_baseline(frames: list[Any], counts: list[int]) -> dict[int, float]:
    """CPU ms per frame of the previous path: the RGB → I420 conversion once, then one aiortc VP8 encoder per
    viewer, each encoding every frame."""
    import av
    from aiortc.codecs.vpx import Vp8Encoder

    from drivers.output.webrtc.encoder import SharedI420

    out = {}
    for count in counts:
        encoders = [Vp8Encoder() for _ in range(count)]
        colour = SharedI420()
        started = time.thread_time()
        for i, frame in enumerate(frames):
            planes = colour.get(frame)
            for encoder in encoders:
                image = av.VideoFrame.from_ndarray(planes, format="yuv420p")
                image.pts = i * 3600
                image.time_base = fractions.Fraction(1, 90_000)
                encoder.encode(image)
        out[count] = (time.thread_time() - started) * 1000.0 / len(frames)
    return out


async def run(args: argparse.Namespace) -> None:
    from bridge.core.config import load_config
    from bridge.http.app import build_app
    from bridge.runtime.daemon import Daemon
    from drivers.output.webrtc.fanout import MediaFanout

    overrides: dict[str, Any] = {
        "video": {"width": args.size, "height": args.size, "fps": 25},
        "audio": {"source": "file", "realtime": True, "loop": True},
        "http": {"host": "127.0.0.1", "port": 0},
        "osc": {"enabled": False}, "vmc": {"enabled": False}, "midi": {"enabled": False},
        "webrtc": {"codec": args.codec, "max_viewers": max(args.viewers),
                   "max_sessions_per_address": max(args.viewers), "tiers": args.tiers},
    }
    daemon = Daemon(load_config(None, overrides=overrides, environ={}), http_app=build_app)
    ready = asyncio.Event()
    task = asyncio.get_running_loop().create_task(daemon.serve(ready=lambda _d: ready.set()))
    await ready.wait()
    rows = []
    player: ClipPlayer | None = None
    try:
        print(f"recording {args.clip_frames} rendered frames...", file=sys.stderr)
        clip = await record(daemon, max(args.clip_frames, args.baseline_frames))
        if args.source == "clip":
            daemon.set_frozen(True)  # the renderer rests; the encoders take the replayed clip
            player = ClipPlayer(clip[: args.clip_frames], daemon.clock.now, 25)
            hub = viewers_of(daemon)
            hub.fanout.close()
            hub.fanout = MediaFanout(player.output, daemon.audio_out, daemon.clock.now, 25,
                                     daemon.config.webrtc.bitrate_kbps, daemon.config.webrtc.tiers)
            player.start()
        for count in args.viewers:
            rows.append(await measure(daemon, count, args.seconds))
    finally:
        if player is not None:
            player.stop()
        daemon.request_stop()
        await task
    frames = clip[: args.baseline_frames]

    source = f"a {args.clip_frames}-frame clip of it replayed" if args.source == "clip" else "the live renderer"
    print(f"WebRTC fan-out, {args.size}x{args.size} {args.codec}, webrtc.tiers = {args.tiers}, {args.seconds:.0f} s per "
          f"row (demo avatar talking, {source}; viewers decode in another process)")
    for r in rows:
        ms = r["encode"] * r["wall"] * 1000.0 / max(r["frames"], 1)
        fps = [d / r["wall"] for d in r["decoded"]]
        print(f"viewers {r['viewers']:2d}: video encode {r['encode']:.3f} s CPU/s ({ms:.2f} ms/frame, "
              f"{r['frames'] / r['wall']:.1f} frames/s, {r['encoders']} encoder(s), {r['keyframes']} forced keyframes); "
              f"opus {r['opus']:.4f} s CPU/s; daemon process {r['process']:.2f} s CPU/s "
              f"(pipeline {r['rendered'] / r['wall']:.1f} fps); viewers decoded median {statistics.median(fps):.1f} "
              f"fps, min {min(fps):.1f}")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        ratio = last["encode"] / max(first["encode"], 1e-9)
        per_frame = (last["encode"] / max(last["frames"], 1)) / max(first["encode"] / max(first["frames"], 1), 1e-12)
        print(f"video encode CPU, {last['viewers']} vs {first['viewers']} viewers: {ratio:.2f}x per second, "
              f"{per_frame:.2f}x per frame (goal <= 1.3x); daemon process CPU: "
              f"{last['process'] / max(first['process'], 1e-9):.2f}x")
    if args.codec == "vp8" and args.baseline_frames:
        base = per_viewer_baseline(frames, [args.viewers[0], args.viewers[-1]])
        lo, hi = args.viewers[0], args.viewers[-1]
        print(f"previous path (one aiortc VP8 encoder per viewer) on {len(frames)} of these frames: "
              f"{lo} viewer(s) {base[lo]:.2f} ms CPU/frame, {hi} viewers {base[hi]:.2f} ms CPU/frame "
              f"({base[hi] / base[lo]:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--source", choices=("clip", "live"), default="clip")
    parser.add_argument("--tiers", type=int, default=1,
                        help="webrtc.tiers (1: every viewer on one encoder; viewers decoding 16 streams on one small "
                             "machine can starve and, with tiers, ask for a lower one: a second encoder)")
    parser.add_argument("--clip-frames", type=int, default=50)
    parser.add_argument("--baseline-frames", type=int, default=50, help="frames for the per-viewer comparison (0: skip)")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
