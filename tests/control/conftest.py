from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.arkit_maps import PRESETS_DIR, load_for_avatar
from bridge.face_params import FaceParams
from bridge.idle import IdleAmounts, IdleLife
from bridge.mixer import Mixer, MixerSettings
from bridge.presets import PresetLibrary


@pytest.fixture
def presets_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped presets."""
    d = tmp_path / "presets"
    shutil.copytree(PRESETS_DIR, d)
    return d


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
