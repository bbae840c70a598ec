"""Mixer helpers for the control tests: a mixer on the shipped (or a copied) presets, and mixing a span of frames."""

from __future__ import annotations

from pathlib import Path

from bridge.controls.arkit_maps import load_for_avatar
from bridge.controls.idle import IdleAmounts, IdleLife
from bridge.controls.mixer import Mixer, MixerSettings
from bridge.controls.presets import PresetLibrary
from bridge.core.face_params import FaceParams


def make_mixer(presets_dir: Path | None = None, idle: bool = False, **settings: object) -> Mixer:
    amounts = IdleAmounts() if idle else IdleAmounts(blink=0.0, gaze=0.0, sway=0.0)
    return Mixer(
        load_for_avatar("demo", presets_dir),
        PresetLibrary(presets_dir),
        IdleLife(amounts=amounts, seed=7),
        MixerSettings(**settings),  # type: ignore[arg-type]
    )


def run(mixer: Mixer, t0: float, t1: float, fps: int = 25, driven: FaceParams | None = None) -> FaceParams:
    """Mix frames from t0 to t1 (inclusive) at fps; the last output."""
    out = FaceParams.neutral()
    n = round((t1 - t0) * fps)
    for i in range(n + 1):
        out = mixer.mix(driven or FaceParams.neutral(), t0 + i / fps)
    return out
