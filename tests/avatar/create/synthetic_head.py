"""The stand-in FLAME on the real template (built once per test run) and exact landmarks projected from it."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from drivers.avatar.flame.model import FlameModel
from drivers.avatar.flashavatar.create.correspondence import Correspondence, view_features
from drivers.avatar.flashavatar.create.synthetic_flame import build_synthetic_flame
from drivers.avatar.flashavatar.create.synthetic_video import Motion, cameras
from tests.golden_files import require


@lru_cache(maxsize=1)
def synthetic_flame() -> FlameModel:
    mesh, lid_l, lid_r = require("flashavatar", "FlameMesh.obj", "l_eyelid.npy", "r_eyelid.npy")
    return FlameModel(build_synthetic_flame(mesh), np.load(lid_l), np.load(lid_r))


def project_motion(flame: FlameModel, motion: Motion, size: int, corr: Correspondence
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex pixels (F,V,2) of the moving head, its face-mesh landmarks (F,478,2; NaN where the table has
    none) where the table says the landmark model reports them, and the cameras' R (F,3,3)."""
    frames = len(motion.jaw)
    with torch.no_grad():
        verts = flame(shape=torch.as_tensor(np.repeat(motion.shape[None], frames, 0), dtype=torch.float32),
                      expression=torch.as_tensor(motion.expression, dtype=torch.float32),
                      jaw=torch.as_tensor(motion.jaw, dtype=torch.float32),
                      eyes=torch.as_tensor(motion.eyes, dtype=torch.float32),
                      eyelids=torch.as_tensor(motion.eyelids, dtype=torch.float32)).numpy().astype(np.float64)
    R, t, K = cameras(motion, flame._j_template[1].numpy(), size)
    faces = flame.faces.numpy()
    points = np.einsum("lk,flkc->flc", corr.bary, verts[:, faces[corr.face_idx]])  # (F,L,3)
    if corr.view_offsets is not None:  # the slide with the viewing direction, as the fitter models it
        centre = corr.surface_points(flame.v_template.numpy(), faces).mean(0)
        points = points + np.einsum("fk,lkc->flc", view_features(R, t, centre), corr.view_offsets)

    def pixels(x: np.ndarray) -> np.ndarray:
        cam = np.einsum("fij,fvj->fvi", R, x) + t[:, None]
        return cam[..., :2] / cam[..., 2:3] * K[0, 0] + size / 2

    landmarks = np.full((frames, 478, 2), np.nan, np.float32)
    landmarks[:, corr.landmark_indices] = pixels(points)
    return pixels(verts), landmarks, R
