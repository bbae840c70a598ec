"""The photometric pose refinement pulls a wrong head pose back onto a rendered face, and keeps the rest."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from bridge.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from drivers.avatar.flashavatar.create.photometric import face_vertices, refine_pose
from drivers.avatar.flashavatar.create.synthetic_flame import LEFT_EYEBALL
from drivers.avatar.flashavatar.create.synthetic_video import astronaut_texture, make_video
from drivers.avatar.flashavatar.create.tracking import TrackingError, TrackingResult
from tests.avatar.create.synthetic_head import synthetic_flame

SIZE = 256
FRAMES = 16


def _relative_rotation_error_deg(R: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per frame, how far the rotation since the first frame is from the true one (as the benchmark measures)."""
    def rel(x: np.ndarray) -> np.ndarray:
        return np.einsum("fij,kj->fik", x.astype(np.float64), x[0].astype(np.float64))
    return np.degrees(np.linalg.norm(matrix_to_axis_angle(np.einsum("fji,fjk->fik", rel(R), rel(truth))), axis=1))


def test_wrong_poses_are_pulled_back_onto_the_face() -> None:
    flame = synthetic_flame()
    v = flame.v_template.numpy()
    video = make_video(flame, astronaut_texture(v, flame.faces.numpy()), FRAMES, SIZE, seed=4)
    truth = video.truth
    # The landmark fit's kind of error: a pitch and yaw that drift a few degrees off as the head turns.
    phase = 2 * np.pi * np.arange(FRAMES) / FRAMES
    wrong = axis_angle_to_matrix(np.radians(np.stack([4 * np.sin(phase), 2 * np.cos(phase), 0 * phase], 1)))
    R_wrong = np.einsum("fij,fjk->fik", wrong, truth["R"].astype(np.float64))
    centre = np.einsum("fij,j->fi", truth["R"].astype(np.float64), v[face_vertices(flame)].mean(0)) + truth["t"]
    t_wrong = np.einsum("fij,fj->fi", wrong, truth["t"] - centre) + centre
    start = TrackingResult(
        shape=truth["shape"], expression=truth["expression"], jaw=truth["jaw"], eyes=truth["eyes"],
        eyelids=truth["eyelids"], R=R_wrong.astype(np.float32), t=t_wrong.astype(np.float32), K=truth["K"],
        image_size=SIZE, landmark_error_px=np.zeros(FRAMES, np.float32), valid=np.ones(FRAMES, bool))
    before = _relative_rotation_error_deg(start.R, truth["R"])
    out = refine_pose(start, video.frames, flame, device="cpu")
    after = _relative_rotation_error_deg(out.R, truth["R"])
    assert np.median(after) < 0.5 * np.median(before), (before, after)
    assert np.array_equal(out.expression, start.expression) and np.array_equal(out.jaw, start.jaw)
    assert "photometric_s" in out.seconds


def test_face_vertices_are_the_front_without_the_eyeballs() -> None:
    flame = synthetic_flame()
    vid = face_vertices(flame)
    assert 500 < len(vid) < len(flame.v_template) // 2
    assert not np.isin(vid, np.arange(LEFT_EYEBALL.start, len(flame.v_template))).any()


def test_refuses_frames_that_do_not_match_the_tracking() -> None:
    flame = synthetic_flame()
    n = 3
    res = TrackingResult(
        shape=np.zeros(300, np.float32), expression=np.zeros((n, 100), np.float32), jaw=np.zeros((n, 3), np.float32),
        eyes=np.zeros((n, 6), np.float32), eyelids=np.zeros((n, 2), np.float32),
        R=np.repeat(np.diag([1.0, -1.0, -1.0])[None], n, 0).astype(np.float32),
        t=np.tile(np.array([0.0, 0.0, 0.6], np.float32), (n, 1)), K=np.eye(3, dtype=np.float32), image_size=64,
        landmark_error_px=np.zeros(n, np.float32), valid=np.ones(n, bool))
    with pytest.raises(TrackingError, match="photometric"):
        refine_pose(res, [np.zeros((64, 64, 3), np.uint8)] * 2, flame, device="cpu")
