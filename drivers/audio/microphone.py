"""Microphone input through PortAudio (sounddevice), resampled to 16 kHz mono, reconnecting when the device
disappears."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk

log = logging.getLogger(__name__)


def import_sounddevice() -> Any:
    """sounddevice, or a UserError that says how to install PortAudio."""
    try:
        import sounddevice
    except OSError as exc:  # raised when the PortAudio shared library is missing
        raise UserError(
            f"PortAudio is not available ({exc}). Install it: Debian/Ubuntu 'sudo apt install libportaudio2', "
            "Fedora 'sudo dnf install portaudio', macOS 'brew install portaudio'; Windows wheels include it"
        ) from exc
    return sounddevice


def find_device(sd: Any, device: str | int | None, kind: str) -> int | None:
    """Resolve a device by index or by (case-insensitive) name substring; None = system default."""
    channels_key = "max_input_channels" if kind == "input" else "max_output_channels"
    devices = list(sd.query_devices())
    candidates = [(i, d) for i, d in enumerate(devices) if d[channels_key] > 0]
    listing = "; ".join(f"{i}: {d['name']}" for i, d in candidates) or "none"
    if device is None:
        if not candidates:
            raise UserError(f"no audio {kind} device found; connect one, or use audio.source = 'file'")
        return None
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
        if any(i == index for i, _ in candidates):
            return index
        raise UserError(f"audio {kind} device {index} does not exist; available {kind}s: {listing}")
    matches = [i for i, d in candidates if str(device).lower() in d["name"].lower()]
    if not matches:
        raise UserError(f"no audio {kind} device matches {device!r}; available {kind}s: {listing}")
    return matches[0]


class MicrophoneAudioSource:
    """Captures from a sounddevice InputStream on its own PortAudio thread; chunks are stamped on the media
    clock when their last sample arrives. A vanished device is reopened with exponential backoff."""

    name = "microphone"

    def __init__(self, device: str | int | None = None, chunk_ms: float = 20.0) -> None:
        self.sd = import_sounddevice()
        self.device_spec = device
        self.device = find_device(self.sd, device, "input")
        info = self.sd.query_devices(self.device, "input")
        self.native_rate = int(info["default_samplerate"]) or SAMPLE_RATE
        self.blocksize = max(1, int(self.native_rate * chunk_ms / 1000.0))
        self._queue: queue.Queue[AudioChunk] = queue.Queue(maxsize=500)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._now: Callable[[], float] = time.monotonic
        self.reconnects = 0
        self.dropped = 0
        self.error: BaseException | None = None  # a vanished device is reopened, never an error
        self.end_pts: float | None = None  # a microphone goes on

    @classmethod
    def from_config(cls, config: Config) -> MicrophoneAudioSource:
        return cls(device=config.audio.device)

    def _resampler(self) -> Any:
        from drivers.audio.decode import mono_resampler

        return mono_resampler()

    def start(self, now: Callable[[], float]) -> None:
        self._now = now
        self._thread = threading.Thread(target=self._supervise, name="audio-microphone", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._capture()
                backoff = 0.5
            except Exception as exc:  # the device vanished or failed: retry, never crash the daemon
                log.warning("microphone %r failed (%s); retrying in %.1f s", self.device_spec, exc, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2.0, 10.0)
            self.reconnects += 1
            try:
                self.device = find_device(self.sd, self.device_spec, "input")
            except UserError as exc:
                log.warning("%s", exc)

    def _capture(self) -> None:
        import av

        resampler = self._resampler()
        failed = threading.Event()

        def callback(indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
            if status and status.input_overflow:
                self.dropped += 1
            arrival = self._now()
            block = np.ascontiguousarray(indata.mean(axis=1, dtype=np.float32).reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate = self.native_rate
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                chunk = AudioChunk(samples, arrival - samples.size / SAMPLE_RATE)
                try:
                    self._queue.put_nowait(chunk)
                except queue.Full:
                    self.dropped += 1

        def finished() -> None:
            failed.set()

        with self.sd.InputStream(
            device=self.device,
            channels=1,
            samplerate=self.native_rate,
            blocksize=self.blocksize,
            dtype="float32",
            callback=callback,
            finished_callback=finished,
        ):
            while not self._stop.is_set() and not failed.is_set():
                time.sleep(0.05)
        if failed.is_set() and not self._stop.is_set():
            raise RuntimeError("the input stream stopped (device unplugged?)")

    def read(self, timeout: float) -> AudioChunk | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def finished(self) -> bool:
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
