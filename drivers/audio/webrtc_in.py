"""A remote peer's microphone (the viewer page's talk button, or any WebRTC client) as an AudioSource.

The daemon owns one `RemoteAudioInbox` (its `remote_audio`): the WebRTC viewers hand each incoming audio
track to it, and whichever `WebRTCAudioSource` is running takes the audio, resampled to 16 kHz mono with PyAV and stamped on the media
clock at arrival. The newest talker wins: a second track replaces the first. With `mix` set to a local
AudioSource (the microphone), both are summed on the media timeline, so a remote guest and the local speaker
can both drive the avatar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from bridge.core.config import Config
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk, AudioSource
from drivers.audio.decode import mono_resampler

log = logging.getLogger(__name__)


def resampler() -> av.AudioResampler:
    return mono_resampler()


def to_mono16k(frame: av.AudioFrame, resample: av.AudioResampler) -> NDArray[np.float32]:
    """Any decoded WebRTC audio frame (48 kHz stereo s16 from Opus, typically) → 16 kHz mono float32."""
    parts = [out.to_ndarray().reshape(-1).astype(np.float32, copy=False) for out in resample.resample(frame)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class RemoteAudioInbox:
    """The meeting point between remote tracks (asyncio loop) and the running source (pipeline thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sink: Callable[[NDArray[np.float32]], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.tracks_seen = 0
        self.samples_in = 0

    def attach(self, sink: Callable[[NDArray[np.float32]], None] | None) -> None:
        with self._lock:
            self._sink = sink

    def detach(self, sink: Callable[[NDArray[np.float32]], None]) -> None:
        with self._lock:
            if self._sink == sink:  # bound methods compare equal, never identical
                self._sink = None

    def feed(self, samples: NDArray[np.float32]) -> None:
        with self._lock:
            sink = self._sink
        self.samples_in += samples.size
        if sink is not None and samples.size:
            sink(samples)

    def consume(self, track: Any) -> asyncio.Task[None]:
        """Start reading `track` on the running loop (replacing the previous talker)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.tracks_seen += 1
        self._task = asyncio.get_running_loop().create_task(self._read(track), name="webrtc-audio-in")
        return self._task

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        resample = resampler()
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                self.feed(to_mono16k(frame, resample))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class MixBuffer:
    """Sums several 16 kHz streams on the media clock: sample n is media time n / 16000."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start: int | None = None  # absolute sample index of _data[0]
        self._data = np.zeros(0, np.float32)

    def add(self, samples: NDArray[np.float32], pts: float) -> None:
        index = int(round(pts * SAMPLE_RATE))
        with self._lock:
            if self._start is None:
                self._start = index
            offset = index - self._start
            if offset < 0:  # older than what was already read out: keep what is still ahead
                samples, offset = samples[-offset:], 0
            end = offset + samples.size
            if end > self._data.size:
                self._data = np.concatenate([self._data, np.zeros(end - self._data.size, np.float32)])
            self._data[offset:end] += samples

    def take_until(self, pts: float) -> AudioChunk | None:
        """Everything before media time `pts`, as one chunk (None when nothing is there yet)."""
        with self._lock:
            if self._start is None:
                return None
            count = min(self._data.size, int(round(pts * SAMPLE_RATE)) - self._start)
            if count <= 0:
                return None
            out, self._data = self._data[:count], self._data[count:]
            chunk = AudioChunk(np.clip(out, -1.0, 1.0).astype(np.float32), self._start / SAMPLE_RATE)
            self._start += count
            return chunk


class WebRTCAudioSource:
    """An AudioSource fed by the remote peer's microphone, optionally mixed with a local source."""

    name = "webrtc"

    def __init__(self, inbox: RemoteAudioInbox, mix: AudioSource | None = None, jitter: float = 0.06) -> None:
        self.inbox = inbox
        self.mix = mix
        self.jitter = jitter  # how long mixed audio waits for the later of its streams
        self._queue: queue.Queue[AudioChunk] = queue.Queue(maxsize=500)
        self._now: Callable[[], float] = time.monotonic
        self._stop = threading.Event()
        self._mixer = MixBuffer() if mix is not None else None
        self._mix_thread: threading.Thread | None = None
        self.dropped = 0
        self.error: BaseException | None = None
        self.end_pts: float | None = None  # a call goes on
        self._last_end: float | None = None

    @classmethod
    def from_config(cls, config: Config, *, inbox: RemoteAudioInbox, mix: AudioSource | None = None
                    ) -> WebRTCAudioSource:
        """Reads the daemon's `inbox`; with audio.webrtc_mix the build hands the local microphone as `mix`."""
        return cls(inbox, mix=mix)

    def start(self, now: Callable[[], float]) -> None:
        self._now = now
        self.inbox.attach(self._on_samples)
        if self.mix is not None:
            self.mix.start(now)
            self._mix_thread = threading.Thread(target=self._pump_local, name="audio-webrtc-mix", daemon=True)
            self._mix_thread.start()

    def _on_samples(self, samples: NDArray[np.float32]) -> None:
        chunk = AudioChunk(samples, self._now() - samples.size / SAMPLE_RATE)
        if self._mixer is not None:
            self._mixer.add(chunk.samples, chunk.pts)
            return
        self._put(chunk)

    def _put(self, chunk: AudioChunk) -> None:
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self.dropped += 1

    def _pump_local(self) -> None:
        assert self.mix is not None and self._mixer is not None
        while not self._stop.is_set():
            chunk = self.mix.read(timeout=0.05)
            if chunk is not None:
                self._mixer.add(chunk.samples, chunk.pts)
            out = self._mixer.take_until(self._now() - self.jitter)
            if out is not None:
                self._put(out)

    def read(self, timeout: float) -> AudioChunk | None:
        try:
            chunk = self._queue.get(timeout=timeout)
        except queue.Empty:
            return self._silence()
        self._last_end = chunk.end_pts
        return chunk

    def _silence(self) -> AudioChunk | None:
        """While nobody talks, silence keeps the media clock (and the avatar's idle life) running."""
        now = self._now() - self.jitter
        start = self._last_end if self._last_end is not None else now - 0.02
        if now - start < 0.02:
            return None
        start = max(start, now - 1.0)
        chunk = AudioChunk(np.zeros(int(round((now - start) * SAMPLE_RATE)), np.float32), start)
        self._last_end = chunk.end_pts
        return chunk

    @property
    def finished(self) -> bool:
        return False  # a remote talker can always come back

    def stop(self) -> None:
        self._stop.set()
        self.inbox.detach(self._on_samples)
        if self._mix_thread is not None:
            self._mix_thread.join(1.0)
        if self.mix is not None:
            self.mix.stop()
