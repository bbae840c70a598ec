"""A light face driver without a model: audio level and spectral shape → jaw opening and mouth shape.

Each video frame is analysed from a 30 ms window centred on its slot, so a frame is known 15 ms after the
slot's middle (35 ms after its start at 25 fps). Attack/release smoothing keeps the jaw from chattering;
audio under the noise floor closes the mouth.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from bridge.core.config import Config
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk, Avatar
from bridge.core.models import ModelCache

WINDOW_S = 0.030
FLOOR_DB = -48.0  # absolute gate: quieter is silence
RANGE_DB = 26.0  # loudness range mapped onto the jaw, below the running peak
PEAK_DECAY_DB_S = 3.0  # the running peak falls this fast, so a quieter speaker still opens the mouth


class ProceduralFaceDriver:
    """Implements `FaceDriver`. `pucker_channel`/`wide_channel` are expression indices the avatar reads as
    lip rounding and lip spreading (the demo avatar's; None for avatars without such channels)."""

    name = "procedural"

    def __init__(
        self,
        fps: int = 25,
        attack_ms: float = 12.0,
        release_ms: float = 90.0,
        gain: float = 1.0,
        max_jaw: float = 0.35,
        pucker_channel: int | None = None,
        wide_channel: int | None = None,
    ) -> None:
        self.fps = fps
        self.attack_s = attack_ms / 1000.0
        self.release_s = release_ms / 1000.0
        self.gain = gain
        self.max_jaw = max_jaw
        self.pucker_channel = pucker_channel
        self.wide_channel = wide_channel
        self._half = int(WINDOW_S * SAMPLE_RATE / 2)
        self._taper = np.hanning(2 * self._half).astype(np.float32)
        self._freqs = np.fft.rfftfreq(2 * self._half, 1.0 / SAMPLE_RATE)
        self.reset(0.0)

    @classmethod
    def from_config(cls, config: Config, *, avatar: Avatar | None = None,
                    models: ModelCache | None = None) -> ProceduralFaceDriver:
        """The [face.procedural] section at the video's frame rate; `avatar` names the expression channels
        the driver may animate (the demo head's pucker and wide), if it has them. It has no model weights, so
        nothing to take from `models`."""
        p = config.face.procedural
        channels = avatar.expression_channels if avatar is not None else {}
        return cls(fps=config.video.fps, attack_ms=p.attack_ms, release_ms=p.release_ms, gain=p.gain,
                   max_jaw=p.max_jaw, pucker_channel=channels.get("pucker"), wide_channel=channels.get("wide"))

    @property
    def latency(self) -> float:
        return 0.5 / self.fps + WINDOW_S / 2

    def reset(self, start_pts: float) -> None:
        self.start_pts = start_pts
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # sample index (from stream start) of _buffer[0]
        self._received = 0
        self._next_frame = 0
        self._jaw = 0.0
        self._pucker = 0.0
        self._wide = 0.0
        self._peak_db = FLOOR_DB + RANGE_DB

    def _centre(self, frame: int) -> int:
        return round((frame + 0.5) * SAMPLE_RATE / self.fps)

    def push(self, chunk: AudioChunk) -> list[FaceParams]:
        if chunk.sample_rate != SAMPLE_RATE:
            raise ValueError(f"the procedural driver takes {SAMPLE_RATE} Hz audio, got {chunk.sample_rate} Hz")
        self._buffer = np.concatenate([self._buffer, np.asarray(chunk.samples, np.float32)])
        self._received += len(chunk.samples)
        out: list[FaceParams] = []
        while self._centre(self._next_frame) + self._half <= self._received:
            out.append(self._frame(self._next_frame))
            self._next_frame += 1
        self._trim()
        return out

    def flush(self) -> list[FaceParams]:
        """Emit the frames whose slot started before the audio ended (missing samples count as silence)."""
        out: list[FaceParams] = []
        last = math.ceil(self._received * self.fps / SAMPLE_RATE)
        while self._next_frame < last:
            out.append(self._frame(self._next_frame))
            self._next_frame += 1
        return out

    def close(self) -> None:
        """Nothing to free: no thread, no shared model."""

    def _trim(self) -> None:
        keep_from = self._centre(self._next_frame) - self._half
        cut = min(keep_from - self._buffer_start, len(self._buffer))
        if cut > 0:
            self._buffer = self._buffer[cut:]
            self._buffer_start += cut

    def _window(self, frame: int) -> NDArray[np.float32]:
        lo = self._centre(frame) - self._half - self._buffer_start
        hi = lo + 2 * self._half
        win = np.zeros(2 * self._half, np.float32)
        src_lo, src_hi = max(lo, 0), min(hi, len(self._buffer))
        if src_hi > src_lo:
            win[src_lo - lo : src_hi - lo] = self._buffer[src_lo:src_hi]
        return win

    def _analyse(self, win: NDArray[np.float32]) -> tuple[float, float]:
        """Loudness in [0, 1] above the floor and the spectral centroid in Hz."""
        rms = float(np.sqrt(np.mean(win * win))) * self.gain
        db = 20.0 * math.log10(max(rms, 1e-9))
        self._peak_db = max(db, self._peak_db - PEAK_DECAY_DB_S / self.fps, FLOOR_DB + RANGE_DB)
        if db < FLOOR_DB:
            level = 0.0
        else:
            level = min(max((db - (self._peak_db - RANGE_DB)) / RANGE_DB, 0.0), 1.0) ** 1.5
        spectrum = np.abs(np.fft.rfft(win * self._taper))
        total = float(spectrum.sum())
        centroid = float((spectrum * self._freqs).sum() / total) if total > 1e-9 else 0.0
        return level, centroid

    def _smooth(self, current: float, target: float) -> float:
        tau = self.attack_s if target > current else self.release_s
        alpha = 1.0 - math.exp(-(1.0 / self.fps) / tau)
        return current + alpha * (target - current)

    def _frame(self, frame: int) -> FaceParams:
        level, centroid = self._analyse(self._window(frame))
        sibilance = min(max((centroid - 2500.0) / 3000.0, 0.0), 1.0)
        rounding = min(max((900.0 - centroid) / 600.0, 0.0), 1.0)
        jaw_target = self.max_jaw * level * (1.0 - 0.5 * sibilance)
        self._jaw = self._smooth(self._jaw, jaw_target)
        self._pucker = self._smooth(self._pucker, level * rounding)
        self._wide = self._smooth(self._wide, level * sibilance * 0.6)
        params = FaceParams(pts=self.start_pts + frame / self.fps, audio_time=self.start_pts + frame / self.fps)
        params.jaw[0] = self._jaw
        if self.pucker_channel is not None:
            params.expression[self.pucker_channel] = self._pucker
        if self.wide_channel is not None:
            params.expression[self.wide_channel] = self._wide
        return params
