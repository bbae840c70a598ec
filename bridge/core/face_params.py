"""`FaceParams`: one frame of FLAME-style face state, the currency between face drivers, the mixer and avatars.

Rotations are axis-angle in radians (FLAME's convention); `to_6d()` gives the 6D form FlashAvatar feeds its
network. Every value is timestamped on the media clock: `pts` is when the frame is shown, `audio_time` is the
capture time of the audio that drove it (None when no audio did), so sinks can align and measure latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from bridge.core.rotations import axis_angle_to_rotation_6d, rotation_6d_to_axis_angle

F32 = NDArray[np.float32]

N_EXPRESSION = 100


def _zeros(*shape: int) -> F32:
    return np.zeros(shape, dtype=np.float32)


@dataclass
class FaceParams:
    """FLAME-style parameters of one video frame (all arrays float32)."""

    expression: F32 = field(default_factory=lambda: _zeros(N_EXPRESSION))
    jaw: F32 = field(default_factory=lambda: _zeros(3))
    eyes: F32 = field(default_factory=lambda: _zeros(2, 3))  # left, right (FLAME joints 3 and 4)
    eyelids: F32 = field(default_factory=lambda: _zeros(2))  # left, right blendshape weights; 1 = closed
    neck: F32 = field(default_factory=lambda: _zeros(3))
    head: F32 = field(default_factory=lambda: _zeros(3))  # global (root) rotation
    translation: F32 = field(default_factory=lambda: _zeros(3))
    pts: float = 0.0
    audio_time: float | None = None

    # Layout of `to_vector()`: name → (start, length). The mixer and the HTTP API address channels by it.
    LAYOUT: ClassVar[dict[str, tuple[int, int]]] = {
        "expression": (0, 100),
        "jaw": (100, 3),
        "eyes": (103, 6),
        "eyelids": (109, 2),
        "neck": (111, 3),
        "head": (114, 3),
        "translation": (117, 3),
    }
    VECTOR_SIZE: ClassVar[int] = 120

    def __post_init__(self) -> None:
        shapes = {
            "expression": (N_EXPRESSION,),
            "jaw": (3,),
            "eyes": (2, 3),
            "eyelids": (2,),
            "neck": (3,),
            "head": (3,),
            "translation": (3,),
        }
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if name == "expression" and value.ndim == 1 and value.shape[0] < N_EXPRESSION:
                # Drivers with fewer components (DiffPoseTalk: 50) fill the first ones; the rest stay zero.
                value = np.concatenate([value, np.zeros(N_EXPRESSION - value.shape[0], np.float32)])
            if value.shape != shape:
                raise ValueError(f"FaceParams.{name} must have shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"FaceParams.{name} contains NaN or infinite values")
            setattr(self, name, value)

    @classmethod
    def neutral(cls, pts: float = 0.0) -> FaceParams:
        return cls(pts=pts)

    def copy(self, **changes: object) -> FaceParams:
        arrays: dict[str, Any] = {k: np.array(getattr(self, k)) for k in self.LAYOUT}
        arrays.update(changes)
        return replace(self, **arrays)

    def to_vector(self) -> F32:
        return np.concatenate([np.asarray(getattr(self, k), np.float32).reshape(-1) for k in self.LAYOUT])

    @classmethod
    def from_vector(cls, vec: NDArray[np.floating], pts: float = 0.0, audio_time: float | None = None) -> FaceParams:
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape[0] != cls.VECTOR_SIZE:
            raise ValueError(f"a FaceParams vector has {cls.VECTOR_SIZE} values, got {vec.shape[0]}")
        parts = {k: vec[s : s + n] for k, (s, n) in cls.LAYOUT.items()}
        parts["eyes"] = parts["eyes"].reshape(2, 3)
        return cls(**parts, pts=pts, audio_time=audio_time)  # type: ignore[arg-type]

    def to_6d(self) -> dict[str, F32]:
        """Rotations in the 6D form (jaw (6,), eyes (12,), neck (6,), head (6,))."""
        return {
            "jaw": axis_angle_to_rotation_6d(self.jaw).astype(np.float32),
            "eyes": axis_angle_to_rotation_6d(self.eyes).reshape(12).astype(np.float32),
            "neck": axis_angle_to_rotation_6d(self.neck).astype(np.float32),
            "head": axis_angle_to_rotation_6d(self.head).astype(np.float32),
        }

    @classmethod
    def from_6d(
        cls,
        expression: NDArray[np.floating],
        jaw6: NDArray[np.floating],
        eyes12: NDArray[np.floating],
        eyelids: NDArray[np.floating] | None = None,
        pts: float = 0.0,
    ) -> FaceParams:
        """Build from a tracker's 6D output (metrical-tracker / FlashAvatar layout)."""
        return cls(
            expression=np.asarray(expression, np.float32).reshape(-1),
            jaw=rotation_6d_to_axis_angle(np.asarray(jaw6).reshape(6)).astype(np.float32),
            eyes=rotation_6d_to_axis_angle(np.asarray(eyes12).reshape(2, 6)).astype(np.float32),
            eyelids=np.zeros(2, np.float32) if eyelids is None else np.asarray(eyelids, np.float32).reshape(2),
            pts=pts,
        )

