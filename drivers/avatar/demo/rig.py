"""Posing the demo head from FaceParams: expression fields, eyelids, jaw, eyes, then the rigid head motion.

All of it is a few vectorised numpy passes over the Gaussians (a couple of milliseconds for ~27k), so the
render thread spends its time in the splatting, not here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bridge.core.face_params import FaceParams
from bridge.core.rotations import axis_angle_to_matrix, matrix_to_quat, quat_left_matrix
from drivers.avatar.demo.head import (
    CHANNELS,
    EYEBALL,
    IRIS,
    JAW_HINGE,
    LID_UP,
    NECK_PIVOT,
    PUPIL,
    HeadModel,
    lid_points,
)
from drivers.avatar.flame.model import head_motion

F = NDArray[np.float32]
# Head rotation pivots at the top of the neck (the "root"), neck rotation at its base.
LID_FOLLOWS_PITCH = 0.8  # eyelid units per radian of eye pitch
JOINTS = np.array([NECK_PIVOT, NECK_PIVOT + np.array([0.0, -0.06, 0.0])])


class HeadRig:
    """Precomputed index sets of a HeadModel; `pose(params)` gives posed means, quats and normals."""

    def __init__(self, model: HeadModel, channels: dict[str, int]) -> None:
        self.m = model
        self.channel_index = [channels[name] for name in CHANNELS]
        self.lids = np.nonzero(model.region == LID_UP)[0]
        self.lid_side = model.eye_side[self.lids].astype(np.float64)
        self.lid_uv = model.lid_uv[self.lids].astype(np.float64)
        eye = np.isin(model.region, (EYEBALL, IRIS, PUPIL))
        self.eye_idx = [np.nonzero(eye & (model.eye_side == s))[0] for s in (0, 1)]
        self.jaw_idx = np.nonzero(model.jaw_weight > 0)[0]
        self.jaw_w = model.jaw_weight[self.jaw_idx][:, None]
        self.body_idx = np.nonzero(model.neck_weight < 1)[0]
        self.body_w = model.neck_weight[self.body_idx][:, None]
        self.quats = model.quats.astype(np.float64)  # turned by the head's rotation in one product per frame

    def pose(self, params: FaceParams) -> tuple[F, F, F]:
        m = self.m
        expr = np.asarray(params.expression, np.float32)
        weights = np.array([expr[i] if i < len(expr) else 0.0 for i in self.channel_index], np.float32)
        p = m.means.copy()
        for w, fld in zip(weights, m.fields):
            if w != 0.0:
                p += w * fld
        # Eyelids: the upper lid slides along its shell from the top of the opening to the blink line, and
        # follows the gaze up and down as real lids do.
        eyes = np.asarray(params.eyes, np.float64).reshape(2, 3)
        per_eye = np.asarray(params.eyelids, np.float64) + LID_FOLLOWS_PITCH * eyes[:, 0]
        lid = per_eye[self.lid_side.astype(int)]
        p[self.lids] = lid_points(self.lid_uv, self.lid_side, lid, m.eye_centres)
        # Jaw: lower face rotates about the hinge, blended by each Gaussian's weight.
        jaw = np.asarray(params.jaw, np.float64)
        if np.any(jaw != 0):
            rj = axis_angle_to_matrix(jaw).astype(np.float32)
            h = JAW_HINGE.astype(np.float32)
            q = p[self.jaw_idx]
            p[self.jaw_idx] = q + self.jaw_w * ((q - h) @ rj.T + h - q)
        # Eyes: eyeball, iris and pupil rotate about each eye's centre.
        for side in (0, 1):
            if np.any(eyes[side] != 0):
                re = axis_angle_to_matrix(eyes[side]).astype(np.float32)
                c = m.eye_centres[side].astype(np.float32)
                idx = self.eye_idx[side]
                p[idx] = (p[idx] - c) @ re.T + c
        # Head and neck: one rigid motion; the lower neck stays with the body.
        motion = head_motion(np.asarray(params.head), np.asarray(params.neck), np.asarray(params.translation),
                             JOINTS)
        rot = motion[:3, :3].astype(np.float32)
        moved = p @ rot.T + motion[:3, 3].astype(np.float32)
        if len(self.body_idx):
            b = self.body_idx
            moved[b] = p[b] + self.body_w * (moved[b] - p[b])
        quats = (self.quats @ quat_left_matrix(matrix_to_quat(motion[:3, :3])).T).astype(np.float32)
        normals = m.normals @ rot.T
        return moved, quats, normals
