"""Where the reference files made by the upstream model code live, and the one rule for missing ones.

Missing files fail the run in CI (the checkpoint loaders would go untested) and skip elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import in_ci

SHARED = Path(__file__).resolve().parents[2] / "shared" / "golden"
DIRS = {"flashavatar": "AVATAR_BRIDGE_GOLDEN_FA", "diffposetalk": "AVATAR_BRIDGE_GOLDEN_DPT"}
# What building the FlashAvatar avatar reads.
FILES = ("golden_seed0.npz", "chkpnt_seed0.pth", "flame_synthetic.pkl", "FLAME_masks_synthetic.pkl", "FlameMesh.obj",
         "l_eyelid.npy", "r_eyelid.npy")


def golden_dir(model: str) -> Path:
    """The folder for `model` ("flashavatar" or "diffposetalk"); its environment variable overrides it."""
    return Path(os.environ.get(DIRS[model], SHARED / model))


def require(model: str, *names: str) -> list[Path]:
    """The paths of `names` in the model's folder; fails in CI and skips elsewhere when any is missing."""
    folder = golden_dir(model)
    paths = [folder / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        msg = f"{model} reference files missing in {folder}: {missing} (set {DIRS[model]})"
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return paths
