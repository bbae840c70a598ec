"""The square crop that follows the head: from per-frame face boxes to a smooth track, and the crop itself.

Per-frame detections jitter by a few pixels; cropping each frame at its own box would shake the whole image,
and the avatar would learn that shake. The centre and size are interpolated over frames without a face and
then low-pass filtered over time (a Gaussian of `CENTER_SIGMA_S` for the centre, a longer one for the size, which
changes only as the phone moves nearer or further), so the crop glides with the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from drivers.avatar.flashavatar.create.video import FPS

SIZE = 512
CROP_SCALE = 2.6  # crop side / face-box side: hair, ears and the neck in view, as in FlashAvatar's datasets
DOWN_SHIFT = 0.15  # the crop's centre sits this many face-box sides below the face's centre (the neck)
CENTER_SIGMA_S = 0.2
SIZE_SIGMA_S = 1.0


@dataclass
class CropTrack:
    """Square boxes (F,4) as x0, y0, x1, y1 in source pixels, one per output frame."""

    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames without a value; the ends hold the nearest value."""
    idx = np.arange(len(values))
    out = values.astype(np.float64).copy()
    for c in range(values.shape[1]):
        out[:, c] = np.interp(idx, idx[valid], values[valid, c])
    return out


def smooth_track(centers: np.ndarray, sizes: np.ndarray, valid: np.ndarray, fps: float = FPS) -> CropTrack:
    """The crop boxes from face centres (F,2), face sizes (F,) and which frames had a face (F,)."""
    if not valid.any():
        raise ValueError("no frame has a face")
    c = _fill(centers, valid)
    s = _fill(sizes[:, None], valid)[:, 0]
    c = gaussian_filter1d(c, CENTER_SIGMA_S * fps, axis=0, mode="nearest")
    s = gaussian_filter1d(s, SIZE_SIGMA_S * fps, mode="nearest")
    side = s * CROP_SCALE
    cx, cy = c[:, 0], c[:, 1] + DOWN_SHIFT * s
    boxes = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)
    return CropTrack(boxes.astype(np.float64))


def crop(rgb: np.ndarray, box: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The square `box` (x0, y0, x1, y1 in `rgb`'s pixels) resampled to size², black outside the frame."""
    import cv2

    x0, y0, x1 = (float(v) for v in box[:3])
    scale = size / (x1 - x0)
    m = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], np.float64)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def jitter_px(boxes: np.ndarray) -> float:
    """Median frame-to-frame second difference of the box corners, in pixels (0 for a still crop)."""
    if len(boxes) < 3:
        return 0.0
    d2 = boxes[2:] - 2 * boxes[1:-1] + boxes[:-2]
    return float(np.median(np.abs(d2)))
