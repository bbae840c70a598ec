"""What a session's frames themselves tell: delivered fps and glass-to-glass latency (audio capture → frame
out), observed on the loop by a subscriber of the session's frames. The status page, `/metrics` and the host's
load figures read it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from bridge.core.clock import MediaClock
from bridge.core.fanout import Broadcast
from bridge.core.interfaces import VideoFrame


@dataclass
class LiveStats:
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    frames: int = 0
    last_index: int | None = None
    skipped: int = 0  # frame indices never seen by this observer (dropped upstream or too slow to take)

    def observe(self, index: int, arrival: float, latency: float | None) -> None:
        self.frames += 1
        if self.last_index is not None and index > self.last_index + 1:
            self.skipped += index - self.last_index - 1
        self.last_index = index
        self.arrivals.append(arrival)
        if latency is not None:
            self.latencies.append(latency)

    def fps(self, now: float, window: float = 2.0) -> float:
        recent = [t for t in self.arrivals if now - t <= window]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def latency_ms(self) -> dict[str, float | None]:
        if not self.latencies:
            return {"last": None, "mean": None, "max": None}
        values = list(self.latencies)[-64:]
        return {
            "last": values[-1] * 1000.0,
            "mean": sum(values) / len(values) * 1000.0,
            "max": max(values) * 1000.0,
        }


async def watch_frames(frames: Broadcast[VideoFrame], clock: MediaClock, live: LiveStats) -> None:
    """Observe every frame into `live` until the stream ends (run as a task on the loop; cancel to stop)."""
    sub = frames.subscribe(maxsize=8, loop=asyncio.get_running_loop())
    try:
        while True:
            frame = await sub.aget()
            if frame is None:
                return
            now = clock.now()
            latency = None if frame.audio_time is None else max(0.0, now - frame.audio_time)
            live.observe(frame.index, time.monotonic(), latency)
    finally:
        sub.close()
