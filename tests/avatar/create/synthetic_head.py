"""The stand-in FLAME on the real template (built once per test run) and exact landmarks projected from it."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from drivers.avatar.flame.model import FlameModel
from drivers.avatar.flashavatar.create.correspondence import Correspondence
from drivers.avatar.flashavatar.create.synthetic_flame import build_synthetic_flame
from drivers.avatar.flashavatar.create.synthetic_video import Motion, cameras
from tests.golden_files import require


@lru_cache(maxsize=1)
def synthetic_flame() -> FlameModel:
    mesh, lid_l, lid_r = require("flashavatar", "FlameMesh.obj", "l_eyelid.npy", "r_eyelid.npy")
    return FlameModel(build_synthetic_flame(mesh), np.load(lid_l), np.load(lid_r))


def project_motion(flame: FlameModel, motion: Motion, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """Vertex pixels (F,V,2) of the moving head and its cameras R (F,3,3), t (F,3), K (3,3)."""
    frames = len(motion.jaw)
    with torch.no_grad():
        verts = flame(shape=torch.as_tensor(np.repeat(motion.shape[None], frames, 0), dtype=torch.float32),
                      expression=torch.as_tensor(motion.expression, dtype=torch.float32),
                      jaw=torch.as_tensor(motion.jaw, dtype=torch.float32),
                      eyes=torch.as_tensor(motion.eyes, dtype=torch.float32),
                      eyelids=torch.as_tensor(motion.eyelids, dtype=torch.float32)).numpy().astype(np.float64)
    R, t, K = cameras(motion, flame._j_template[1].numpy(), size)
    cam = np.einsum("fij,fvj->fvi", R, verts) + t[:, None]
    return cam[..., :2] / cam[..., 2:3] * K[0, 0] + size / 2, R, t, K


def landmarks_from_vertices(pixels: np.ndarray, faces: np.ndarray, corr: Correspondence) -> np.ndarray:
    """(F,478,2) face-mesh landmarks at the correspondence's surface points (the others NaN)."""
    out = np.full((len(pixels), 478, 2), np.nan, np.float32)
    tri = pixels[:, faces[corr.face_idx]]  # (F,L,3,2)
    out[:, corr.landmark_indices] = np.einsum("lk,flkc->flc", corr.bary, tri)
    return out
