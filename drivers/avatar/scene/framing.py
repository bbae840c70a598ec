"""Webcam-style framing: where the head sits in a frame of any size, made by the camera intrinsics.

A framing says how tall the head is as a fraction of the frame's height, where its centre sits (the eye line,
from the top) and where across. From the head's bounding sphere in camera space it gives the focal length and
principal point that put it there, and the head's region of interest (ROI): the part of the frame the head and
neck can reach with ordinary motion. Avatars render only the ROI, through the same intrinsics shifted by the
ROI's corner, so a 1280x720 frame costs what its head costs, and nothing is resampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# head height (the bounding sphere's diameter / frame height), eye line (centre from the top), centre across
PRESETS: dict[str, tuple[float, float, float]] = {
    "webcam": (0.30, 0.40, 0.5),  # head and shoulders, as a laptop camera frames a person
    "close": (0.52, 0.44, 0.5),  # closer: the head fills more of the frame, shoulders at the bottom edge
    "wide": (0.26, 0.38, 0.5),  # more of the room around the person
    "fill": (0.85, 0.5, 0.5),  # the head filling the shorter side: the square picture of earlier releases
}
ROI_SIDE = 1.35  # head radii either side of the centre the ROI keeps (turns and sway stay inside)
ROI_UP = 1.35  # head radii above the centre
ROI_DOWN = 2.0  # head radii below the centre: chin and neck


@dataclass(frozen=True)
class Roi:
    """A rectangle of the frame in pixels: columns [x0, x0 + width), rows [y0, y0 + height)."""

    x0: int
    y0: int
    width: int
    height: int

    @property
    def x1(self) -> int:
        return self.x0 + self.width

    @property
    def y1(self) -> int:
        return self.y0 + self.height


@dataclass(frozen=True)
class RoiCamera:
    """Intrinsics of the whole frame and the ROI a head renders into (`roi_K`: K shifted by the ROI corner)."""

    K: np.ndarray  # (3, 3) for the full frame
    roi: Roi

    @property
    def roi_K(self) -> np.ndarray:
        k = self.K.copy()
        k[0, 2] -= self.roi.x0
        k[1, 2] -= self.roi.y0
        return k

    def project(self, point_cam: np.ndarray) -> np.ndarray:
        """A camera-space point (3,) → full-frame pixel (x, y)."""
        p = self.K @ np.asarray(point_cam, np.float64)
        return p[:2] / p[2]


@dataclass(frozen=True)
class HeadFraming:
    """A frame size and where a head goes in it (see PRESETS)."""

    width: int
    height: int
    head_height: float
    eye_line: float
    center_x: float

    @classmethod
    def preset(cls, name: str, width: int, height: int, zoom: float = 1.0) -> HeadFraming:
        """A named framing; "auto" is "fill" for square frames and "webcam" for others. `zoom` scales the head."""
        if name == "auto":
            name = "fill" if width == height else "webcam"
        head, eye, cx = PRESETS[name]
        if name == "fill":
            head = 0.85 * min(width, height) / height
        return cls(width, height, head * zoom, eye, cx)

    def camera(self, center_cam: np.ndarray, radius: float, aspect: float = 1.0) -> RoiCamera:
        """Intrinsics that put a head (bounding sphere centre in camera space, radius in metres) where this
        framing says, and its ROI. `aspect` is fy / fx of the camera the avatar was tracked with."""
        c = np.asarray(center_cam, np.float64).reshape(3)
        z = float(c[2])
        fy = self.head_height * self.height * z / (2.0 * radius)
        fx = fy / aspect
        u, v = self.center_x * self.width, self.eye_line * self.height
        cx, cy = u - fx * c[0] / z, v - fy * c[1] / z
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        r_px = fy * radius / z
        x0 = max(0, int(np.floor(u - ROI_SIDE * r_px)))
        x1 = min(self.width, int(np.ceil(u + ROI_SIDE * r_px)))
        y0 = max(0, int(np.floor(v - ROI_UP * r_px)))
        y1 = min(self.height, int(np.ceil(v + ROI_DOWN * r_px)))
        return RoiCamera(K, Roi(x0, y0, max(1, x1 - x0), max(1, y1 - y0)))
