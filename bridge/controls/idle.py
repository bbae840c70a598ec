"""Idle life: blinks, gaze saccades and a slow head sway, so the avatar looks alive while nobody speaks.

Everything is a function of the media-clock times passed to `step()` and of the seed, so a run is
reproducible. Blink intervals follow a log-normal distribution (median about 3 s, rarely under 1 s) with
occasional double blinks; gaze holds a fixation for an exponentially distributed time and then jumps
quickly; the head sways on a few incommensurate low frequencies, less while speaking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bridge.core.config import IdleConfig
from bridge.core.face_params import FaceParams

F32 = NDArray[np.float32]
L = FaceParams.LAYOUT

BLINK_CLOSE_S = 0.07
BLINK_HOLD_S = 0.04
BLINK_OPEN_S = 0.16
BLINK_LENGTH_S = BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S
DOUBLE_BLINK_P = 0.12
DOUBLE_BLINK_GAP_S = 0.08


def blink_profile(t: float) -> float:
    """Eyelid closure (0..1) at `t` seconds after a blink starts."""
    if t < 0 or t >= BLINK_LENGTH_S:
        return 0.0
    if t < BLINK_CLOSE_S:
        x = t / BLINK_CLOSE_S
        return x * x * (3 - 2 * x)
    if t < BLINK_CLOSE_S + BLINK_HOLD_S:
        return 1.0
    x = (t - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S
    return 1.0 - x * x * (3 - 2 * x)


@dataclass
class IdleAmounts:
    """Per-feature amount (0 = off), settable at runtime through `idle/<feature>` controls."""

    blink: float = 1.0
    gaze: float = 1.0
    sway: float = 1.0


@dataclass
class IdleLife:
    amounts: IdleAmounts = field(default_factory=IdleAmounts)
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._blinks: list[float] = []  # start times of idle blinks
        self._manual_blinks: list[float] = []  # start times of blinks asked for by a control
        self._next_blink: float | None = None
        self._gaze = np.zeros(2, np.float64)  # current (yaw, pitch)
        self._gaze_target = np.zeros(2, np.float64)
        self._next_saccade: float | None = None
        self._last: float | None = None
        self._speaking = 0.0
        self._phases = self._rng.uniform(0, 2 * math.pi, size=(3, 3))
        self._freqs = np.array([0.071, 0.13, 0.23])

    @classmethod
    def from_config(cls, cfg: IdleConfig, seed: int = 0) -> IdleLife:
        """From the [idle] section (on/off + amount per feature)."""
        a = IdleAmounts(
            blink=float(cfg.blink_amount) if cfg.blink else 0.0,
            gaze=float(cfg.gaze_amount) if cfg.gaze else 0.0,
            sway=float(cfg.sway_amount) if cfg.sway else 0.0,
        )
        return cls(amounts=a, seed=seed)

    def _blink_interval(self) -> float:
        return float(np.clip(self._rng.lognormal(mean=math.log(3.0), sigma=0.55), 0.8, 12.0))

    def trigger_blink(self, now: float, double: bool = False, manual: bool = True) -> None:
        """A blink starting now (a manual `blink` control works even with idle blinks off)."""
        starts = self._manual_blinks if manual else self._blinks
        starts.append(now)
        if double:
            starts.append(now + BLINK_LENGTH_S + DOUBLE_BLINK_GAP_S)

    def blink(self, now: float) -> tuple[float, float]:
        """Eyelid closure (idle, manual) at `now`; idle closure already scaled by the blink amount."""
        self._blinks = [b for b in self._blinks if now - b < BLINK_LENGTH_S]
        self._manual_blinks = [b for b in self._manual_blinks if now - b < BLINK_LENGTH_S]
        idle = max((blink_profile(now - b) for b in self._blinks), default=0.0)
        manual = max((blink_profile(now - b) for b in self._manual_blinks), default=0.0)
        return min(idle * self.amounts.blink, 1.0), manual

    def step(self, now: float, speaking: float) -> F32:
        """Advance to `now`; returns the idle delta on eyes and head (blinks: see `blink()`)."""
        dt = 0.0 if self._last is None else min(max(now - self._last, 0.0), 0.5)
        self._last = now
        a = self.amounts
        # Blinks.
        if self._next_blink is None:
            self._next_blink = now + self._blink_interval()
        if now >= self._next_blink:
            if a.blink > 0:
                self.trigger_blink(now, double=bool(self._rng.random() < DOUBLE_BLINK_P), manual=False)
            self._next_blink = now + self._blink_interval()
        # Gaze saccades.
        if self._next_saccade is None:
            self._next_saccade = now + float(self._rng.exponential(1.5)) + 0.3
        if now >= self._next_saccade:
            if self._rng.random() < 0.35:
                self._gaze_target[:] = 0.0
            else:
                self._gaze_target[:] = (self._rng.uniform(-0.12, 0.12), self._rng.uniform(-0.06, 0.05))
            self._next_saccade = now + float(self._rng.exponential(1.5)) + 0.3
        self._gaze += (self._gaze_target - self._gaze) * (1.0 - math.exp(-dt / 0.025))
        # Sway, smaller while speaking.
        self._speaking += (min(max(speaking, 0.0), 1.0) - self._speaking) * (1.0 - math.exp(-dt / 0.5))
        sway = np.sin(2 * math.pi * self._freqs[None, :] * now + self._phases).sum(axis=1) / 3.0
        sway_amp = 0.035 * a.sway * (1.0 - 0.6 * self._speaking)
        delta = np.zeros(FaceParams.VECTOR_SIZE, np.float32)
        e0 = L["eyes"][0]
        yaw, pitch = self._gaze * a.gaze
        delta[e0 + 0] = delta[e0 + 3] = pitch
        delta[e0 + 1] = delta[e0 + 4] = yaw
        h0 = L["head"][0]
        delta[h0 : h0 + 3] = (sway * sway_amp * np.array([0.8, 1.0, 0.6])).astype(np.float32)
        return delta
