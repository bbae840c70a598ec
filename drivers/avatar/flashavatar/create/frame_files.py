"""metrical-tracker `.frame` files from a tracking result, one per image, as `avatar train` reads them.

The layout is the tracker's `save_checkpoint` dict of float32 NumPy arrays: 'flame' (exp, shape, jaw and eyes in
PyTorch3D's 6D form, eyelids, and tex/sh, which FlashAvatar does not use), 'camera' (PyTorch3D's convention),
'opencv' (R, t, K), 'img_size', 'frame_id', 'global_step'. Pairing is upstream's: tracker frame m holds image
m + 1, so the first image has no frame. Each file is written to a temporary name and renamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from bridge.core.rotations import axis_angle_to_rotation_6d, matrix_to_rotation_6d
from drivers.avatar.flashavatar.create.tracking import TrackingResult
from drivers.avatar.flashavatar.train.dataset import FRAME_OFFSET


def frame_dict(shape: NDArray[np.floating], expr: NDArray[np.floating], jaw6: NDArray[np.floating],
               eyes12: NDArray[np.floating], eyelids: NDArray[np.floating], R: NDArray[np.floating],
               t: NDArray[np.floating], K: NDArray[np.floating], image_size: int, index: int) -> dict[str, object]:
    """One tracker checkpoint: FLAME (shape 300, exp 100, jaw 6D, eyes 2x6D, eyelids 2) and an OpenCV camera."""
    f32 = np.float32
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64)
    r_p3d = R.T.copy()  # PyTorch3D's camera (row vectors, x and y flipped); FlashAvatar reads 'opencv' only
    r_p3d[:, :2] *= -1
    t_p3d = t.copy()
    t_p3d[:2] *= -1
    return {
        "flame": {"exp": np.asarray(expr, f32).reshape(1, 100), "shape": np.asarray(shape, f32).reshape(1, 300),
                  "tex": np.zeros((1, 140), f32), "sh": np.zeros((1, 9, 3), f32),
                  "eyes": np.asarray(eyes12, f32).reshape(1, 12), "eyelids": np.asarray(eyelids, f32).reshape(1, 2),
                  "jaw": np.asarray(jaw6, f32).reshape(1, 6)},
        "camera": {"R": matrix_to_rotation_6d(r_p3d)[None].astype(f32), "t": t_p3d[None].astype(f32),
                   "fl": np.array([[2 * float(K[0, 0]) / image_size]], f32), "pp": np.zeros((1, 2), f32)},
        "opencv": {"R": R[None].astype(f32), "t": t[None].astype(f32), "K": np.asarray(K, f32)[None]},
        "img_size": np.array([image_size, image_size]),
        "frame_id": f"{index:05d}",
        "global_step": index,
    }


def write_frames(result: TrackingResult, folder: Path, image_numbers: Sequence[int] | None = None,
                 skip_invalid: bool = False) -> list[Path]:
    """Write `folder/MMMMM.frame` for each result frame i, the tracking of image `image_numbers[i]` (default:
    images 0..F-1), as frame m = image - 1. Returns the files written. Frames without a detected face are
    written with their interpolated parameters unless `skip_invalid` (the training loader then leaves them out)."""
    numbers = list(range(result.frames)) if image_numbers is None else [int(n) for n in image_numbers]
    if len(numbers) != result.frames:
        raise ValueError(f"{len(numbers)} image numbers for {result.frames} tracked frames")
    folder.mkdir(parents=True, exist_ok=True)
    jaw6 = axis_angle_to_rotation_6d(result.jaw.astype(np.float64))
    eyes12 = axis_angle_to_rotation_6d(result.eyes.astype(np.float64).reshape(-1, 2, 3)).reshape(-1, 12)
    written = []
    for i, image in enumerate(numbers):
        m = image - FRAME_OFFSET
        if m < 0 or (skip_invalid and not result.valid[i]):
            continue
        data = frame_dict(result.shape, result.expression[i], jaw6[i], eyes12[i], result.eyelids[i], result.R[i],
                          result.t[i], result.K, result.image_size, m)
        path = folder / f"{m:05d}.frame"
        tmp = folder / f".{m:05d}.frame.tmp"
        torch.save(data, tmp)
        tmp.replace(path)
        written.append(path)
    return written
