"""Delayed audio passthrough: the input speech, delayed by the video latency, on an output device that a call
app uses as its microphone (a PipeWire/PulseAudio null sink, BlackHole, VB-Cable). A virtual camera carries
no audio; without this the real microphone would run ahead of the rendered mouth.

`DelayLine` is the timing core: samples are placed by their capture time on the media clock and read out
at `now - delay`, so the output follows the clock (not the device's callback cadence) and the delay can be
changed while it plays. "auto" delay = the daemon's measured glass-to-glass latency (falls back to
`av_delay`).

Outputs are PortAudio devices (by name or index), or `pulse:SINK`: a PulseAudio/PipeWire sink by name,
played through the pulse protocol (drivers.output.pulse), which is how the virtual microphone is fed.

A sound server can stop answering at any time. Opening waits for it at most OPEN_WAIT_S, stopping at most
about a second (what still waits on the server is left behind), and `progress()` tells the watchdog when the
device last took samples, so `/health` names a voice output that stalled or gave up.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.core.config import Config
from bridge.core.deadline import Overdue, call_with_deadline
from bridge.core.errors import UserError
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk, MediaHub
from drivers.output.pulse import HUNG_FIX

log = logging.getLogger(__name__)

PULSE_PREFIX = "pulse:"  # device = "pulse:SINK" plays into that PulseAudio/PipeWire sink
PULSE_BLOCK = SAMPLE_RATE // 100  # samples per write to the sound server (10 ms)
PULSE_BUFFER = 0.2  # seconds the sound server may queue (less when the delay is short: see LEAD)
LEAD = 0.03  # seconds after capture before a block is written: its audio has reached the delay line by then
RESYNC = 0.008  # seconds of (median) error from the due time before the stream is moved (a skip or repeat)
JUMP = 0.020  # seconds the delay must change by to move the stream at once (smaller changes are followed)
STALL = 0.030  # seconds behind in two readings running: the thread was starved and the server ran dry
OPEN_WAIT_S = 5.0  # how long opening the output device may take (a hung sound server never answers)
STOP_WAIT_S = 0.5  # how long stop() waits for each of its threads and for the device to close


class DelayLine:
    """A ring of samples indexed by absolute media-clock sample number (rate samples per second)."""

    def __init__(self, rate: int = SAMPLE_RATE, capacity_s: float = 10.0) -> None:
        self.rate = rate
        self._buf = np.zeros(int(capacity_s * rate), np.float32)
        self._written_until: int | None = None  # absolute index after the last written sample
        self._lock = threading.Lock()
        self.underruns = 0

    def write(self, chunk: AudioChunk) -> None:
        start = int(round(chunk.pts * self.rate))
        data = np.asarray(chunk.samples, np.float32)
        n = self._buf.size
        if data.size > n:
            start, data = start + data.size - n, data[-n:]
        with self._lock:
            if self._written_until is not None and start > self._written_until:
                gap = min(start - self._written_until, n)  # silence over a hole, never stale audio
                self._put(self._written_until, np.zeros(gap, np.float32))
            self._put(start, data)
            end = start + data.size
            self._written_until = end if self._written_until is None else max(self._written_until, end)

    def _put(self, start: int, data: NDArray[np.float32]) -> None:
        n = self._buf.size
        idx = (start + np.arange(data.size)) % n
        self._buf[idx] = data

    def read(self, media_time: float, frames: int) -> NDArray[np.float32]:
        """`frames` samples starting at `media_time` (silence where nothing was written or it was overwritten)."""
        start = int(round(media_time * self.rate))
        out = np.zeros(frames, np.float32)
        with self._lock:
            if self._written_until is None:
                return out
            oldest = self._written_until - self._buf.size
            lo = max(start, oldest)
            hi = min(start + frames, self._written_until)
            if hi > lo:
                idx = np.arange(lo, hi) % self._buf.size
                out[lo - start : hi - start] = self._buf[idx]
            if start + frames > self._written_until:
                self.underruns += 1
        return out


class AudioPassthrough:
    """Plays `daemon.audio_in` (capture-time stamps) to a sounddevice output, `delay` seconds late."""

    def __init__(self, hub: MediaHub, device: str | int | None = None, delay_ms: float | str = "auto",
                 rate: int = 48_000) -> None:
        self.hub = hub
        self.device_spec = device
        self.delay_ms = delay_ms
        self.rate = rate
        self.line = DelayLine(SAMPLE_RATE)
        self._stream: Any = None
        self._pulse: Any = None  # drivers.output.pulse.PulseStream for `pulse:` devices
        self._player: threading.Thread | None = None
        self._sub: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.output_latency = 0.0
        self.resyncs = 0  # times the pulse output had drifted and was moved (each one a short skip or repeat)
        self._played_at: float | None = None  # time.monotonic() when the device last took samples
        self._gave_up: str | None = None  # why the output stopped playing by itself

    @classmethod
    def from_config(cls, config: Config, *, hub: MediaHub, device: str | int | None = None) -> AudioPassthrough:
        """Plays `hub`'s input on `device` (None: the system default), delayed as outputs.passthrough.delay_ms."""
        return cls(hub, device=device, delay_ms=config.outputs.passthrough.delay_ms)

    @property
    def delay(self) -> float:
        """Seconds from capture to playback, as configured or measured."""
        if self.delay_ms != "auto":
            return float(self.delay_ms) / 1000.0
        return measured_delay(self.hub)

    def set_delay(self, delay_ms: float | str) -> None:
        if delay_ms != "auto" and not (0 <= float(delay_ms) <= 5000):
            raise UserError(f"outputs.passthrough.delay_ms must be 'auto' or 0..5000 ms, got {delay_ms!r}")
        self.delay_ms = delay_ms

    def progress(self) -> tuple[float | None, str | None]:
        """When the device last took samples (time.monotonic) and why it stopped, for the watchdog."""
        return self._played_at, self._gave_up

    def start(self) -> None:
        spec = self.device_spec
        if isinstance(spec, str) and spec.startswith(PULSE_PREFIX):
            sink = spec[len(PULSE_PREFIX):] or None
            call_with_deadline(lambda: self._open_pulse(sink), OPEN_WAIT_S, f"opening the sound server's sink "
                               f"{sink!r}", HUNG_FIX)
        else:
            call_with_deadline(self._open_portaudio, OPEN_WAIT_S, f"opening the output device {spec!r}",
                               "check the device, or choose another one (avatar-bridge devices)")
        self._sub = self.hub.audio_in.subscribe(maxsize=500)
        self._thread = threading.Thread(target=self._feed, name="passthrough", daemon=True)
        self._thread.start()
        if self._stream is not None:
            self._stream.start()
        else:
            self._player = threading.Thread(target=self._play_pulse, name="passthrough-pulse", daemon=True)
            self._player.start()

    def _open_portaudio(self) -> None:
        from drivers.audio.microphone import find_device, import_sounddevice

        sd = import_sounddevice()
        index = find_device(sd, self.device_spec, "output")
        now: Callable[[], float] = self.hub.clock.now
        up = self.rate // SAMPLE_RATE

        def callback(outdata: NDArray[np.float32], frames: int, _time: Any, _status: Any) -> None:
            # The device plays this block output_latency from now: read what was captured `delay` before that.
            at = now() + self.output_latency - self.delay
            need = -(-frames // up)
            mono = np.repeat(self.line.read(at, need), up)[:frames]
            outdata[:] = mono[:, None]
            self._played_at = time.monotonic()

        self._stream = sd.OutputStream(device=index, samplerate=self.rate, channels=1, dtype="float32",
                                       callback=callback, latency="low")
        self.output_latency = float(self._stream.latency)

    def _open_pulse(self, sink: str | None) -> None:
        from drivers.output.pulse import PLAYBACK, PulseStream

        # 16 kHz mono as captured: the sound server resamples to the sink's rate with its own resampler.
        self._pulse = PulseStream(PLAYBACK, sink, SAMPLE_RATE, latency_s=PULSE_BUFFER, stream_name="delayed voice")
        self.output_latency = self._pulse.latency()

    def _play_pulse(self) -> None:
        """Write 10 ms blocks back to back; a block is heard `latency` after it is written, so it should hold
        what was captured `delay` before that. The server may queue up to PULSE_BUFFER, which rides out a
        starved thread on a busy machine; a block is never written before its audio has arrived (LEAD), so
        with a short delay less is queued. One latency reading can be far off (the thread was preempted
        between the clock and the query), so the stream follows the median error of the last quarter second,
        moving only when that is off by more than RESYNC. It moves at once to a new delay, and past what it
        missed when it was starved for longer than the queue lasted (STALL)."""
        from drivers.output.pulse import PulseError

        stream, now = self._pulse, self.hub.clock.now
        block = PULSE_BLOCK / SAMPLE_RATE
        cursor: float | None = None
        delay = 0.0
        errors: collections.deque[float] = collections.deque(maxlen=25)
        while not self._stop.is_set():
            try:
                # The clock before the query: the thread may wait for the GIL after it, never before it.
                at = now()
                self.output_latency = stream.latency()
                target = self.delay  # with delay_ms = "auto" a measurement over the pipeline's statistics
                if cursor is None or abs(target - delay) > JUMP:
                    delay = target
                    cursor = at + self.output_latency - delay
                    errors.clear()
                errors.append(at + self.output_latency - delay - cursor)
                stalled = len(errors) >= 2 and min(errors[-1], errors[-2]) > STALL  # two readings agree
                if stalled or (len(errors) == errors.maxlen and abs(float(np.median(errors))) > RESYNC):
                    self.resyncs += 1
                    cursor += errors[-1] if stalled else float(np.median(errors))
                    errors.clear()
                early = cursor + block + LEAD - now()
                if early > 0:  # its audio may not be here yet: let the queue run down instead
                    self._stop.wait(early)
                    continue
                stream.write(self.line.read(cursor, PULSE_BLOCK))
                self._played_at = time.monotonic()
            except PulseError as exc:
                if not self._stop.is_set():
                    self._gave_up = f"the delayed voice stopped playing: {exc}"
                    log.warning("%s", self._gave_up)
                return
            cursor += block

    def _feed(self) -> None:
        while not self._stop.is_set():
            chunk = self._sub.get(timeout=0.2)
            if chunk is not None:
                self.line.write(chunk)

    def stop(self) -> None:
        """Stop playing within about a second whatever the device does: a thread or a device that still
        waits on a hung server is left behind (said in the log), never waited on."""
        self._stop.set()
        if self._sub is not None:
            self._sub.close()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)
        stuck = False
        if self._player is not None:
            self._player.join(STOP_WAIT_S)
            stuck = self._player.is_alive()  # inside a write the server never completes
            self._player = None
        if self._pulse is not None:
            if stuck or not self._pulse.close():
                log.warning("the sound server did not answer: the delayed voice's stream is left open; %s",
                            HUNG_FIX)
            self._pulse = None
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                call_with_deadline(lambda: (stream.stop(), stream.close()), STOP_WAIT_S,
                                   "closing the passthrough output", "check the output device")
            except Overdue as exc:
                log.warning("%s", exc)
            except Exception as exc:
                log.debug("closing the passthrough output: %s", exc)

    @property
    def underruns(self) -> int:
        return self.line.underruns

    def describe(self) -> dict[str, Any]:
        return {"device": self.device_spec, "delay_ms": self.delay * 1000.0, "mode": self.delay_ms,
                "underruns": self.line.underruns, "resyncs": self.resyncs, "running": self._stream is not None or self._pulse is not None}


def measured_delay(hub: MediaHub) -> float:
    """The video latency as measured on the sinks (median glass-to-glass), else the pipeline's av_delay."""
    stages = hub.stats.snapshot().get("stages", {})
    medians = [s["p50_ms"] for name, s in stages.items() if name.startswith("g2g:") and s.get("count", 0) >= 10]
    if medians:
        return min(medians) / 1000.0
    return float(hub.av_delay)
