"""The media clock: one monotonic timeline shared by audio capture, face driving, rendering and sinks."""

from __future__ import annotations

import threading
import time


class MediaClock:
    """Seconds since the clock started, from `time.monotonic()` (never jumps with wall-clock changes)."""

    def __init__(self, fps: int) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._origin

    def sleep_until(self, media_time: float, stop: threading.Event | None = None) -> bool:
        """Sleep until `media_time`; returns False if `stop` was set first."""
        delay = media_time - self.now()
        if delay <= 0:
            return not (stop is not None and stop.is_set())
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)
