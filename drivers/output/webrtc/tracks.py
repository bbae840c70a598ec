"""WebRTC media tracks fed by the daemon: video from `hub.frames`, speech from `hub.audio_out`.

Both tracks of one viewer stamp media on the same epoch (a media-clock time), video at 90 kHz and audio at
48 kHz, so a receiver that aligns them by RTP time sees the lips and the voice together. Video is a
latest-wins subscription (a slow viewer skips frames, it never queues latency); audio is paced to its
presentation time and kept gapless, since Opus timestamps count samples.

aiortc runs one encoder per RTCRtpSender: encodes are not shared between viewers. What is shared is the
RGB → I420 conversion (`SharedI420`), done once per rendered frame for every viewer.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import threading
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from numpy.typing import NDArray

from bridge.core.fanout import Broadcast, Subscription
from bridge.core.interfaces import AudioChunk, MediaHub, VideoFrame
from bridge.core.stats import PipelineStats

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
AUDIO_FRAME = 960  # 20 ms at 48 kHz, what Opus packs
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


def media_to_ticks(media_time: float, epoch: float, rate: int) -> int:
    """Media-clock seconds to RTP ticks since `epoch`."""
    return int(round((media_time - epoch) * rate))


class SharedI420:
    """Converts each rendered frame to I420 once, whatever the number of viewers (keyed by frame index)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: int | None = None
        self._planes: NDArray[np.uint8] | None = None
        self.conversions = 0

    def get(self, frame: VideoFrame) -> NDArray[np.uint8]:
        with self._lock:
            if self._index == frame.index and self._planes is not None:
                return self._planes
        rgb = np.ascontiguousarray(frame.rgb[..., :3])
        converted = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        planes: NDArray[np.uint8] = np.asarray(converted.to_ndarray(), np.uint8)
        with self._lock:
            self._index, self._planes = frame.index, planes
            self.conversions += 1
        return planes


class DaemonVideoTrack(MediaStreamTrack):
    """Rendered frames for one viewer; pts are 90 kHz ticks of the frame's presentation time since `epoch`."""

    kind = "video"

    def __init__(
        self,
        frames: Broadcast[VideoFrame],
        loop: asyncio.AbstractEventLoop,
        epoch: float,
        now: Callable[[], float],
        shared: SharedI420 | None = None,
        stats: PipelineStats | None = None,
        stage: str = "g2g:webrtc",
    ) -> None:
        super().__init__()
        self._sub: Subscription[VideoFrame] = frames.subscribe(maxsize=1, loop=loop)
        self.epoch = epoch
        self._now = now
        self._shared = shared or SharedI420()
        self._stats = stats
        self._stage = stage
        self._last_pts = -1
        self.first_media_time: float | None = None
        self.sent = 0
        self.last_media_time: float | None = None
        self.lag: collections.deque[float] = collections.deque(maxlen=256)  # hand-off time − presentation time

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            frame = await self._sub.aget()
            if frame is None:
                self.stop()
                raise MediaStreamError
            pts = media_to_ticks(frame.pts, self.epoch, VIDEO_CLOCK)
            if pts <= self._last_pts:
                continue  # before this viewer's epoch, or a repeat: never send time backwards
            break
        planes = self._shared.get(frame)
        out = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        out.pts = pts
        out.time_base = VIDEO_TIME_BASE
        self._last_pts = pts
        if self.first_media_time is None:
            self.first_media_time = frame.pts
        self.last_media_time = frame.pts
        self.sent += 1
        self.lag.append(self._now() - frame.pts)
        if self._stats is not None and frame.audio_time is not None:
            self._stats.time(self._stage, max(0.0, self._now() - frame.audio_time))
        return out

    def stop(self) -> None:
        self._sub.close()
        super().stop()


class AudioTimeline:
    """Turns 16 kHz chunks stamped on the media clock into gapless 20 ms frames at 48 kHz from `epoch`.

    Audio before the epoch is cut, a gap becomes silence and an overlap is trimmed, so sample k of the output
    always plays media time epoch + k / 48000."""

    def __init__(self, epoch: float) -> None:
        self.epoch = epoch
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        self._pending = np.zeros(0, np.int16)
        self.samples_out = 0  # 48 kHz samples handed out so far
        self._next_in: float | None = None  # media time where the next input chunk should start

    def push(self, chunk: AudioChunk) -> None:
        samples = np.asarray(chunk.samples, np.float32)
        start = chunk.pts
        if start + chunk.duration <= self.epoch:
            return
        if start < self.epoch:  # cut what precedes the epoch
            skip = int(round((self.epoch - start) * chunk.sample_rate))
            samples, start = samples[skip:], self.epoch
        if self._next_in is None:
            self._next_in = self.epoch
            lead = int(round((start - self.epoch) * AUDIO_RATE))
            self._pending = np.zeros(max(0, lead), np.int16)
        drift = start - self._next_in
        if drift > 0.01:  # a hole in the input: keep the timeline with silence
            self._append(np.zeros(int(round(drift * AUDIO_RATE)), np.int16))
            self._next_in = start
        elif drift < -0.01:  # overlap: drop what was already placed
            skip = int(round(-drift * chunk.sample_rate))
            samples = samples[skip:]
            start = self._next_in
        if samples.size == 0:
            return
        self._next_in = start + samples.size / chunk.sample_rate
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = chunk.sample_rate
        for out in self._resampler.resample(frame):
            self._append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))

    def _append(self, samples: NDArray[np.int16]) -> None:
        self._pending = np.concatenate([self._pending, samples])

    def next_media_time(self) -> float:
        return self.epoch + self.samples_out / AUDIO_RATE

    def ready(self) -> bool:
        return self._pending.size >= AUDIO_FRAME

    def pop(self, silence: bool = False) -> av.AudioFrame:
        """The next 20 ms frame; with `silence`, zeros when the input has not arrived (an underrun)."""
        if self._pending.size >= AUDIO_FRAME:
            data, self._pending = self._pending[:AUDIO_FRAME], self._pending[AUDIO_FRAME:]
        else:
            if not silence:
                raise ValueError("no audio frame ready")
            data = np.zeros(AUDIO_FRAME, np.int16)
            if self._next_in is not None:
                self._next_in += (AUDIO_FRAME - self._pending.size) / AUDIO_RATE
            data[: self._pending.size] = self._pending
            self._pending = np.zeros(0, np.int16)
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples_out
        frame.time_base = AUDIO_TIME_BASE
        self.samples_out += AUDIO_FRAME
        return frame


class DaemonAudioTrack(MediaStreamTrack):
    """The driving speech for one viewer, 48 kHz mono, each 20 ms frame released at its presentation time."""

    kind = "audio"

    def __init__(
        self,
        audio: Broadcast[AudioChunk],
        loop: asyncio.AbstractEventLoop,
        epoch: float,
        now: Callable[[], float],
        underrun_after: float = 0.2,
    ) -> None:
        super().__init__()
        self._sub: Subscription[AudioChunk] = audio.subscribe(maxsize=500, loop=loop)
        self._timeline = AudioTimeline(epoch)
        self._now = now
        self._underrun_after = underrun_after
        self.epoch = epoch
        self.first_media_time: float | None = None
        self.sent = 0
        self.lag: collections.deque[float] = collections.deque(maxlen=256)  # hand-off time − presentation time

    async def _fill(self, deadline: float) -> bool:
        """Take input until a frame is ready or `deadline` (media time) passes; False when the feed closed."""
        while not self._timeline.ready():
            wait = deadline - self._now()
            if wait <= 0:
                return True
            try:
                chunk = await asyncio.wait_for(self._sub.aget(), wait)
            except TimeoutError:
                return True
            if chunk is None:
                return False
            self._timeline.push(chunk)
        return True

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        due = self._timeline.next_media_time()
        alive = await self._fill(due + self._underrun_after)
        if not alive:
            self.stop()
            raise MediaStreamError
        # Underrun (the source stalled): keep the clock with silence rather than stretch time.
        frame = self._timeline.pop(silence=True)
        wait = due - self._now()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.first_media_time is None:
            self.first_media_time = due
        self.sent += 1
        self.lag.append(self._now() - due)
        return frame

    def stop(self) -> None:
        self._sub.close()
        super().stop()


def tracks_for(hub: MediaHub, shared: SharedI420, epoch: float | None = None
               ) -> tuple[DaemonVideoTrack, DaemonAudioTrack]:
    """A video and an audio track on one epoch (now, by default) for one peer of `hub`."""
    loop = asyncio.get_running_loop()
    now = hub.clock.now
    start = now() if epoch is None else epoch
    video = DaemonVideoTrack(hub.frames, loop, start, now, shared=shared, stats=hub.stats)
    audio = DaemonAudioTrack(hub.audio_out, loop, start, now)
    return video, audio
