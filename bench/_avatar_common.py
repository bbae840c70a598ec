"""Shared helpers of the FlashAvatar benchmark scripts: build the golden avatar and pick a splat renderer.

Imports nothing beyond torch/numpy and our own modules (no pydantic, no PyAV), so the scripts run on a bare
CUDA machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.core.face_params import FaceParams  # noqa: E402

DEFAULT_GOLDEN = Path(os.environ.get("AVATAR_BRIDGE_GOLDEN_FA", REPO.parent / "shared" / "golden" / "flashavatar"))
GREEN = (0.0, 1.0, 0.0)


def renderer(name: str, device: str) -> Any:
    """The project's splat renderer for `name` ('cpu' | 'gsplat') on `device`."""
    from drivers.avatar.splat.select import select_renderer

    return select_renderer(name, device)


def golden_flame_model(golden: Path) -> Path:
    """The golden FLAME model: a converted copy (smaller to ship) when there is one, else the original pickle."""
    converted = golden / "flame_synthetic.npz"
    return converted if converted.is_file() else golden / "flame_synthetic.pkl"


def build_avatar(golden: Path, width: int, height: int, device: str, splat: Any, **extra: Any) -> Any:
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    z = np.load(golden / "golden_seed0.npz")
    return FlashAvatarAvatar(
        checkpoint=golden / "chkpnt_seed0.pth", flame_model=golden_flame_model(golden),
        flame_masks=golden / "FLAME_masks_synthetic.pkl", flame_mesh=golden / "FlameMesh.obj", eyelids_dir=golden,
        shape=z["shape"], width=width, height=height, device=device, background=GREEN, splat_renderer=splat,
        **extra,
    )


def golden_params(golden: Path, extra_head_turns: bool = True) -> list[FaceParams]:
    """The golden frames as FaceParams, plus the same faces with the head turned (camera motion)."""
    z = np.load(golden / "golden_seed0.npz")
    out = [FaceParams.from_6d(z["expr"][i], z["jaw_pose"][i], z["eyes_pose"][i], z["eyelids"][i])
           for i in range(len(z["expr"]))]
    if extra_head_turns:
        turns = [(0.0, 0.35, 0.0), (0.2, -0.25, 0.05), (-0.1, 0.0, 0.2)]
        out += [out[(k + 1) % len(out)].copy(head=np.array(t, np.float32)) for k, t in enumerate(turns)]
    return out
