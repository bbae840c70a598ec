"""The speech, encoded to Opus once for every WebRTC viewer.

One thread turns the daemon's 16 kHz chunks into a gapless 48 kHz timeline, releases each 20 ms frame at its
presentation time (so it leaves together with the video frame of the same media time), encodes it and hands
the packet to every subscriber. Packets are stamped with their position on a timeline anchored at media
time 0 (48 kHz ticks), the same origin as the video's 90 kHz ticks, so every viewer can lip-sync by RTP
time and RTCP sender reports whenever it joined. Opus has no keyframes: a late joiner decodes at once.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from bridge.core.fanout import Broadcast, Subscription
from bridge.core.interfaces import AudioChunk
from drivers.audio.decode import mono_resampler
from drivers.output.webrtc.encoder_thread import EncoderThread

log = logging.getLogger(__name__)

AUDIO_RATE = 48_000
AUDIO_FRAME = 960  # 20 ms at 48 kHz, what Opus packs
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
OPUS_BITRATE = 48_000  # mono speech
SUBSCRIBER_QUEUE = 25  # half a second of packets


@dataclass(frozen=True)
class EncodedAudio:
    data: bytes
    sample: int  # 48 kHz ticks since media time 0
    media_time: float  # when this frame plays


class AudioTimeline:
    """Turns 16 kHz chunks stamped on the media clock into gapless 20 ms frames at 48 kHz from `epoch`.

    Audio before the epoch is cut, a gap becomes silence and an overlap is trimmed, so sample k of the output
    always plays media time epoch + k / 48000."""

    def __init__(self, epoch: float) -> None:
        self.epoch = epoch
        self._resampler = mono_resampler(AUDIO_RATE, "s16")
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


def open_opus() -> Any:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.bit_rate = OPUS_BITRATE
    ctx.time_base = AUDIO_TIME_BASE
    ctx.options = {"application": "voip"}
    return ctx


class AudioEncoder(EncoderThread[EncodedAudio]):
    """Paces, encodes and fans out the speech; see the module docstring."""

    def __init__(self, audio: Broadcast[AudioChunk], now: Callable[[], float], underrun_after: float = 0.2) -> None:
        super().__init__("opus")
        self._audio = audio
        self._now = now
        self._underrun_after = underrun_after
        self.encoded = 0
        self.underruns = 0
        self.cpu_seconds = 0.0

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscription[EncodedAudio]:
        return self.output.subscribe(maxsize=SUBSCRIBER_QUEUE, loop=loop)

    def describe(self) -> dict[str, Any]:
        return {"name": "opus", "subscribers": self.subscribers, "encoded": self.encoded,
                "underruns": self.underruns, "cpu_s": round(self.cpu_seconds, 3)}

    def _fill(self, sub: Subscription[AudioChunk], timeline: AudioTimeline, deadline: float) -> bool:
        """Take input until a frame is ready or `deadline` (media time) passes; False once the input closed."""
        while not timeline.ready() and not self._stop.is_set():
            wait = deadline - self._now()
            if wait <= 0:
                return True
            chunk = sub.get(timeout=min(wait, 0.1))
            if chunk is None:
                if sub.closed:
                    return False
                continue
            timeline.push(chunk)
        return True

    def _run(self) -> None:
        sub = self._audio.subscribe(maxsize=500)
        first = math.ceil(self._now() * AUDIO_RATE / AUDIO_FRAME)  # start on the 20 ms grid of media time 0
        timeline = AudioTimeline(first * AUDIO_FRAME / AUDIO_RATE)
        origin = first * AUDIO_FRAME
        ctx = open_opus()
        try:
            while not self._stop.is_set():
                due = timeline.next_media_time()
                if not self._fill(sub, timeline, due + self._underrun_after):
                    break
                if not timeline.ready():
                    self.underruns += 1  # the source stalled: keep the clock with silence rather than stretch time
                frame = timeline.pop(silence=True)
                wait = due - self._now()
                if wait > 0 and self._stop.wait(wait):
                    break
                started = time.thread_time()
                position = timeline.samples_out - AUDIO_FRAME  # this frame's first sample
                packets = ctx.encode(frame)
                self.cpu_seconds += time.thread_time() - started
                for packet in packets:  # Opus gives one packet per 20 ms frame
                    self.encoded += 1
                    self.output.publish(EncodedAudio(bytes(packet), origin + position, due))
        except Exception as exc:  # never take the process down; the viewers' audio ends, video goes on
            log.warning("the Opus encoder stopped: %s", exc)
        finally:
            sub.close()
            self.output.close()
