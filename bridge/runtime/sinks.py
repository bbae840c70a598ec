"""Runs each FrameSink on its own thread behind bounded queues, so one slow or failing sink (a stuck
virtual camera, a full disk) loses its own frames and never delays the renderer or the other sinks.

Opening, writing and closing all happen on that thread, so a sink whose file or device hangs holds only its
own thread: the watchdog names it (with "opening" or "closing" when it hangs there), and a stop waits for it
only as long as its bound (`close(timeout)`), then leaves the thread behind. A sink that sends from a thread
of its own (a PacedSink: the virtual camera) is followed by its last completed send, not by its handovers."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from bridge.core.interfaces import AudioChunk, FrameSink, PacedSink, StreamInfo, VideoFrame
from bridge.core.stats import PipelineStats
from bridge.runtime.watchdog import Watchdog

log = logging.getLogger(__name__)


class SinkRunner:
    def __init__(
        self, sink: FrameSink, info: StreamInfo, stats: PipelineStats, video_queue: int = 3, audio_seconds: float = 10.0,
        now: Callable[[], float] | None = None, watchdog: Watchdog | None = None,
    ) -> None:
        self.sink = sink
        self.watchdog = watchdog
        self.now = now  # the media clock: glass-to-glass latency per sink (audio capture → frame handed out)
        self.info = info
        self.stats = stats
        self.stage = f"sink:{sink.name}"
        self._video: collections.deque[VideoFrame] = collections.deque(maxlen=video_queue)
        # Audio is small and must not be lost, but a dead sink must not hoard memory either.
        self._audio: collections.deque[AudioChunk] = collections.deque(maxlen=int(audio_seconds * 50))
        self._cond = threading.Condition()
        self._closing = False
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=self.stage, daemon=True)
        self._paced = sink if isinstance(sink, PacedSink) else None
        if watchdog is not None and self._paced is not None:
            watchdog.follow(self.stage, self._progress)  # progress is a completed send, not a handover
        elif watchdog is not None:
            watchdog.watch(self.stage)

    def _progress(self) -> tuple[float | None, str | None]:
        """A paced sink's OutputProbe, with this runner's failure (to open, to write) kept as why it gave up."""
        assert self._paced is not None
        if self.failed is not None:
            return None, str(self.failed)
        return self._paced.progress()

    def start(self) -> None:
        self._thread.start()

    @property
    def finished(self) -> bool:
        """The sink's thread has ended: it closed its file or device, or gave up."""
        return not self._thread.is_alive()

    def put_video(self, frame: VideoFrame) -> None:
        if self.failed is not None:
            return
        with self._cond:
            if len(self._video) == self._video.maxlen:
                self.stats.drop(self.stage)
            self._video.append(frame)
            self._cond.notify()

    def put_audio(self, chunk: AudioChunk) -> None:
        if self.failed is not None:
            return
        with self._cond:
            self._audio.append(chunk)
            self._cond.notify()

    def _run(self) -> None:
        import time

        opened = False
        while True:
            with self._cond:
                while not self._video and not self._audio and not self._closing:
                    self._cond.wait(0.5)
                if self._closing and not self._video and not self._audio:
                    break
                # Audio first: a frame never waits for audio that was captured before it.
                audio = list(self._audio)
                self._audio.clear()
                frame = self._video.popleft() if self._video else None
            if not opened:
                # Opened on the first item, when the stream's origin is known.
                self._note("opening")
                try:
                    self.sink.open(self.info)
                    opened = True
                except BaseException as exc:
                    self._fail(exc, "could not open")
                    return
                finally:
                    self._note(None)
            try:
                for chunk in audio:
                    self.sink.write_audio(chunk)
                if frame is not None:
                    started = time.perf_counter()
                    self.sink.write_video(frame)
                    self.stats.time(self.stage, time.perf_counter() - started)
                    if self.watchdog is not None and self._paced is None:
                        self.watchdog.beat(self.stage)
                    if self.now is not None and frame.audio_time is not None:
                        self.stats.time(f"g2g:{self.sink.name}", self.now() - frame.audio_time)
            except BaseException as exc:
                self._fail(exc, "failed")
                break
        if not opened:
            return
        self._note("closing")
        try:
            self.sink.close()
        except BaseException as exc:
            self.failed = self.failed or exc
            if self.watchdog is not None:
                self.watchdog.fail(self.stage, str(exc))
            log.error("sink %s failed to close: %s", self.sink.name, exc)

    def _note(self, doing: str | None) -> None:
        if self.watchdog is not None:
            self.watchdog.note(self.stage, doing)

    def _fail(self, exc: BaseException, what: str) -> None:
        self.failed = exc
        self.stats.incr(f"{self.stage}:errors")
        if self.watchdog is not None:
            self.watchdog.fail(self.stage, str(exc))
        log.error("sink %s %s and is disabled: %s", self.sink.name, what, exc)

    def request_close(self) -> None:
        """Let the sink write what is queued and close, without waiting for it."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        self.request_close()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("sink %s did not finish within %.1f s", self.sink.name, timeout)
