"""The dataset's masks: the person's alpha matte, the head-and-neck mask and the inner-mouth mask.

- alpha: mediapipe's selfie segmentation (a 256² model whose output is coarse at the hair and ears), refined at
  the crop's full resolution by a guided filter with the image as guide, so the matte's edge follows the image's.
- neckhead: the person (alpha > 0.5) above the bottom of the neck. FlashAvatar trains on the head and neck only;
  the line is the fitted FLAME neck rim projected into the image, so shoulders and clothes are left out.
- mouth: the polygon of the inner-lip contour from the face mesh (empty when the mouth is closed).
"""

from __future__ import annotations

import numpy as np

from drivers.avatar.flashavatar.create.correspondence import LIPS_INNER
from drivers.avatar.flashavatar.create.landmarks import solutions

GUIDE_RADIUS = 8
GUIDE_EPS = 1e-3
NECK_MARGIN = 0.02  # the cut sits this fraction of the image below the projected neck rim


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window, edges mirrored."""
    import cv2

    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int = GUIDE_RADIUS, eps: float = GUIDE_EPS
                  ) -> np.ndarray:
    """He et al.'s guided filter with a grey guide: `src` smoothed but with the edges of `guide` (both (H,W))."""
    g, s = guide.astype(np.float32), src.astype(np.float32)
    mg, ms = _box(g, radius), _box(s, radius)
    cov = _box(g * s, radius) - mg * ms
    var = _box(g * g, radius) - mg * mg
    a = cov / (var + eps)
    b = ms - a * mg
    return _box(a, radius) * g + _box(b, radius)


class Segmenter:
    """Person alpha (H,W) float32 in [0,1] for an RGB crop."""

    def __init__(self) -> None:
        self._seg = solutions().selfie_segmentation.SelfieSegmentation(model_selection=0)

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        coarse = self._seg.process(np.ascontiguousarray(rgb)).segmentation_mask.astype(np.float32)
        grey = rgb.astype(np.float32).mean(axis=2) / 255.0
        return np.clip(guided_filter(grey, coarse), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()


def neck_cut(neck_points: np.ndarray, width: int) -> np.ndarray:
    """The cut's row for every column (W,): the least-squares line through the projected neck-rim points."""
    x, y = neck_points[:, 0].astype(np.float64), neck_points[:, 1].astype(np.float64)
    if len(x) >= 2 and np.ptp(x) > 1.0:
        a, b = np.polyfit(x, y, 1)
    else:
        a, b = 0.0, float(np.max(y))
    return a * np.arange(width) + b


def neckhead_mask(alpha: np.ndarray, neck_points: np.ndarray | None) -> np.ndarray:
    """uint8 (H,W) 0/255: the person above the neck's bottom (all of the person when no neck is known)."""
    h, w = alpha.shape
    person = alpha > 0.5
    if neck_points is not None and len(neck_points):
        cut = neck_cut(neck_points, w) + NECK_MARGIN * h
        person &= np.arange(h)[:, None] <= cut[None, :]
    return person.astype(np.uint8) * 255


def mouth_mask(points: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H,W) 0/255: the inside of the inner-lip contour."""
    import cv2

    out = np.zeros(size, np.uint8)
    if points is not None:
        poly = np.round(points[list(LIPS_INNER)]).astype(np.int32)
        cv2.fillPoly(out, [poly], 255)
    return out
