"""A mixer ticking on its own thread at a frame rate, like the render loop, for surface tests."""

from __future__ import annotations

import threading
import time

from bridge.controls.mixer import Mixer
from bridge.core.face_params import FaceParams


class MixerTicker:
    """Calls `mixer.mix` every 1/fps seconds on a real thread; records frame times."""

    def __init__(self, mixer: Mixer, fps: int = 25) -> None:
        self.mixer = mixer
        self.fps = fps
        self.times: list[float] = []
        self.last: FaceParams = FaceParams.neutral()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mixer-ticker", daemon=True)
        self.driven = FaceParams.neutral()

    def _run(self) -> None:
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            now = time.monotonic()
            self.last = self.mixer.mix(self.driven, now - t0)
            self.times.append(now)
            k += 1
            delay = t0 + k / self.fps - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def __enter__(self) -> MixerTicker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
