"""From model output to FLAME coefficients and `FaceParams`.

De-normalisation is upstream's: exp = m[:, :50]·exp_std + exp_mean; pose = [global_rx, ry, rz, jaw_rx, 0, 0]
(head model) or [0, 0, 0, jaw_rx, 0, 0] (no-head model) times pose_std plus pose_mean, and for the no-head
model the global rotation is then forced to exactly zero. The un-generated jaw y/z therefore become the
dataset means (constants), as upstream renders them.

Into `FaceParams`: the 50 expression coefficients fill FLAME 2020's first 50 expression components (the
remaining 50 stay zero, or the mixer's), `jaw` = pose[3:6], `head` = pose[0:3] (FLAME root rotation,
axis-angle radians). Neck, eyes, eyelids and translation are left at rest for the mixer.

Adjusting for an avatar tracked with another tracker: DiffPoseTalk's coefficients follow SPECTRE's
amplitude distribution (expressions) and 6DRepNet's head orientation. If your avatar's own expression codes
have a different scale, pass per-dimension `exp_gain` (e.g. the ratio of your tracker's per-dimension std to
`exp_std` from stats_train.npz) and `exp_offset` (your neutral minus `exp_mean`); `jaw_gain` scales the jaw
opening; `head_rest` (axis-angle) is your avatar's rest orientation, composed by adding to the predicted head
rotation (small-angle composition, adequate for the ±0.3 rad range the model produces). FLAME 2023 avatars are
not coefficient-compatible; retarget in vertex space instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bridge.core.face_params import FaceParams

F32 = NDArray[np.float32]


def denormalise(motion: NDArray[np.floating], stats: dict[str, F32], predict_head_pose: bool,
                ) -> tuple[F32, F32]:
    """(L, D) normalised model output → exp (L, 50), pose (L, 6) in FLAME units, exactly as upstream."""
    m = np.asarray(motion, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] != (54 if predict_head_pose else 51):
        raise ValueError(f"motion must be (L, {54 if predict_head_pose else 51}), got {m.shape}")
    n = m.shape[0]
    exp = m[:, :50] * stats["exp_std"] + stats["exp_mean"]
    zeros2 = np.zeros((n, 2), np.float32)
    if predict_head_pose:
        pose = np.concatenate([m[:, 50:54], zeros2], axis=1)
    else:
        pose = np.concatenate([np.zeros((n, 3), np.float32), m[:, -1:], zeros2], axis=1)
    pose = pose * stats["pose_std"] + stats["pose_mean"]
    if not predict_head_pose:
        pose[:, :3] = 0.0
    return exp.astype(np.float32), pose.astype(np.float32)


@dataclass
class OutputMapping:
    """Per-avatar adjustments applied after de-normalisation (identity by default)."""

    exp_gain: F32 = field(default_factory=lambda: np.ones(50, np.float32))
    exp_offset: F32 = field(default_factory=lambda: np.zeros(50, np.float32))
    jaw_gain: float = 1.0
    head_rest: F32 = field(default_factory=lambda: np.zeros(3, np.float32))

    def to_face_params(self, exp: F32, pose: F32, pts: float = 0.0, audio_time: float | None = None,
                       ) -> FaceParams:
        """One frame: exp (50,), pose (6,) → FaceParams."""
        expression = np.zeros(100, np.float32)
        expression[:50] = np.asarray(exp, np.float32) * self.exp_gain + self.exp_offset
        return FaceParams(expression=expression, jaw=np.asarray(pose[3:6], np.float32) * self.jaw_gain,
                          head=np.asarray(pose[0:3], np.float32) + self.head_rest, pts=pts, audio_time=audio_time)
