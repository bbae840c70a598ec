"""Audio from a file (any format PyAV decodes), paced in real time like a microphone or as fast as consumed."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.core.config import Config
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk
from drivers.audio.decode import CLIPS, demo_clip_path, iter_decoded


class _ChunkedSource:
    """Shared machinery: a producer thread cuts samples into fixed chunks, stamps them and queues them."""

    name = "audio"

    def __init__(self, chunk_ms: float = 20.0, realtime: bool = True) -> None:
        self.chunk = int(SAMPLE_RATE * chunk_ms / 1000.0)
        self.realtime = realtime
        # Real-time sources never wait on the consumer; fast ones block on a bounded queue instead.
        self._queue: queue.Queue[AudioChunk] = queue.Queue(maxsize=0 if realtime else 64)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._now: Callable[[], float] = time.monotonic
        self.error: BaseException | None = None
        # Media time where the audio ends, known as soon as the last chunk is queued (before it is read): the
        # pipeline ends a run there even when the thread reading the queue runs behind on a busy machine.
        self.end_pts: float | None = None

    def _blocks(self) -> Iterator[NDArray[np.float32]]:
        raise NotImplementedError

    def start(self, now: Callable[[], float]) -> None:
        self._now = now
        self._thread = threading.Thread(target=self._run, name=f"audio-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        origin = self._now()
        emitted = 0
        pending = np.zeros(0, np.float32)
        try:
            for block in self._blocks():
                pending = np.concatenate([pending, block]) if pending.size else block
                while pending.size >= self.chunk:
                    if self._stop.is_set():
                        return
                    samples, pending = pending[: self.chunk], pending[self.chunk :]
                    pts = origin + emitted / SAMPLE_RATE
                    emitted += samples.size
                    if self.realtime:
                        # A microphone delivers a chunk once its last sample exists.
                        delay = pts + samples.size / SAMPLE_RATE - self._now()
                        if delay > 0 and self._stop.wait(delay):
                            return
                    self._put(AudioChunk(samples.copy(), pts))  # its own (a block may be a kept, read-only clip)
            if pending.size and not self._stop.is_set():
                self._put(AudioChunk(pending.copy(), origin + emitted / SAMPLE_RATE))
                emitted += pending.size
            if not self._stop.is_set():
                self.end_pts = origin + emitted / SAMPLE_RATE
        except BaseException as exc:  # reported through `error`, the consumer decides
            self.error = exc
        finally:
            self._done.set()

    def _put(self, chunk: AudioChunk) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, timeout: float) -> AudioChunk | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def finished(self) -> bool:
        return self._done.is_set() and self._queue.empty()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


class FileAudioSource(_ChunkedSource):
    """Plays a file as a live source. `path=None` plays the demo speech clip shipped with the package."""

    name = "file"

    def __init__(
        self, path: Path | str | None = None, realtime: bool = True, loop: bool = False, chunk_ms: float = 20.0
    ) -> None:
        super().__init__(chunk_ms=chunk_ms, realtime=realtime)
        self.path = Path(path) if path is not None else demo_clip_path()
        self.loop = loop
        # Fail at construction, before threads start, if the file cannot be used (and close it at once).
        with contextlib.closing(iter_decoded(self.path)) as blocks:
            first = next(blocks, None)
        if first is None:
            from bridge.core.errors import UserError

            raise UserError(f"audio file {self.path} contains no audio samples")

    @classmethod
    def from_config(cls, config: Config) -> FileAudioSource:
        a = config.audio
        return cls(path=a.file, realtime=a.realtime, loop=a.loop)

    def _blocks(self) -> Iterator[NDArray[np.float32]]:
        while True:
            # Decoded once per process when short (a loop's later passes, other sessions playing it: CLIPS).
            with contextlib.closing(CLIPS.blocks(self.path)) as blocks:  # closed at once, also when stopped early
                yield from blocks
            if not self.loop or self._stop.is_set():
                return


class SilenceAudioSource(_ChunkedSource):
    """Endless (or `duration`-long) silence: the avatar idles; useful with controls only."""

    name = "silence"

    def __init__(self, duration: float | None = None, realtime: bool = True, chunk_ms: float = 20.0) -> None:
        super().__init__(chunk_ms=chunk_ms, realtime=realtime)
        self.duration = duration

    @classmethod
    def from_config(cls, config: Config) -> SilenceAudioSource:
        return cls(realtime=True)

    def _blocks(self) -> Iterator[NDArray[np.float32]]:
        total = None if self.duration is None else int(self.duration * SAMPLE_RATE)
        sent = 0
        while total is None or sent < total:
            n = self.chunk if total is None else min(self.chunk, total - sent)
            sent += n
            yield np.zeros(n, np.float32)
