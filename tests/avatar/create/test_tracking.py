"""FLAME fitting on exact landmarks projected from a known head: it recovers the motion, keeps a still face still,
carries frames without a face, and refuses input it cannot track."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from drivers.avatar.flashavatar.create.correspondence import NOSE, shipped_correspondence
from drivers.avatar.flashavatar.create.synthetic_video import default_motion
from drivers.avatar.flashavatar.create.tracking import (
    FLIP,
    FitSettings,
    SurfaceFlame,
    TrackingError,
    fit_video,
    rigid_start,
)
from tests.avatar.create.synthetic_head import project_motion, synthetic_flame

SIZE = 512
QUICK = FitSettings(rigid_steps=100, full_steps=300, robust_steps=100)


def _relative_angles(R: np.ndarray) -> np.ndarray:
    """Each frame's camera rotation relative to the first one, as axis-angle (F,3)."""
    return matrix_to_axis_angle(np.einsum("fij,kj->fik", R.astype(np.float64), R[0].astype(np.float64)))


def test_recovers_known_motion_from_exact_landmarks() -> None:
    flame = synthetic_flame()
    corr = shipped_correspondence()
    motion = default_motion(24, seed=1)
    pix, points, R = project_motion(flame, motion, SIZE, corr)
    steps: list[tuple[int, int]] = []
    res = fit_video(points, np.ones(24, bool), SIZE, flame, None, corr, device="cpu",
                    progress=lambda d, n: steps.append((d, n)), settings=QUICK)
    fitted = res.project(res.vertices(flame))
    assert np.median(np.linalg.norm(fitted - pix, axis=-1)) < 1.0
    assert np.nanmedian(res.landmark_error_px) < 0.5
    rot_err = np.degrees(np.linalg.norm(matrix_to_axis_angle(
        np.einsum("fji,fjk->fik", axis_angle_to_matrix(_relative_angles(res.R)),
                  axis_angle_to_matrix(_relative_angles(R)))), axis=1))
    assert rot_err.max() < 1.5
    assert np.degrees(np.abs(res.jaw[:, 0] - motion.jaw[:, 0])).max() < 2.0
    assert res.K[0, 2] == res.K[1, 2] == SIZE / 2 and res.K[0, 0] == res.K[1, 1]
    assert steps[-1] == (QUICK.rigid_steps + QUICK.full_steps + QUICK.robust_steps,) * 2
    assert res.valid.all() and res.shape.shape == (300,) and res.eyes.shape == (24, 6)


def test_landmarks_the_fit_cannot_follow_are_trusted_less() -> None:
    """Nose points several pixels off their surface points (as the landmark model's are, differently from
    view to view): the reweighted last stage leans on the points the head can explain and lands nearer the truth."""
    flame = synthetic_flame()
    corr = shipped_correspondence()
    motion = default_motion(24, seed=5)
    pix, points, _ = project_motion(flame, motion, SIZE, corr)
    off = np.isin(np.arange(478), NOSE)
    drift = np.stack([np.sin(np.arange(24) / 4), np.cos(np.arange(24) / 5)], axis=1)[:, None] * 8.0  # pixels
    points[:, off] += drift.astype(np.float32)

    def error(robust_steps: int) -> float:
        cfg = FitSettings(rigid_steps=100, full_steps=300, robust_steps=robust_steps)
        res = fit_video(points, np.ones(24, bool), SIZE, flame, None, corr, device="cpu", settings=cfg)
        return float(np.median(np.linalg.norm(res.project(res.vertices(flame)) - pix, axis=-1)))

    assert error(150) < 0.92 * error(0)  # about 1.83 px against 2.09 px


def test_still_face_gives_still_parameters() -> None:
    flame = synthetic_flame()
    corr = shipped_correspondence()
    motion = default_motion(16, seed=2)
    for arr in (motion.head, motion.jaw, motion.eyes, motion.eyelids, motion.expression):
        arr[:] = arr[5]
    _, points, _ = project_motion(flame, motion, SIZE, corr)
    points += np.random.default_rng(0).normal(scale=0.3, size=points.shape).astype(np.float32)  # detector noise
    res = fit_video(points, np.ones(16, bool), SIZE, flame, None, corr, device="cpu", settings=QUICK)
    fitted = res.project(res.vertices(flame))
    jitter = np.linalg.norm(fitted[2:] - 2 * fitted[1:-1] + fitted[:-2], axis=-1)
    assert np.median(jitter) < 0.1  # pixels; the input's own second difference is about 0.7 px
    assert np.degrees(np.linalg.norm(_relative_angles(res.R), axis=1)).max() < 0.5  # moving: ±25°
    assert np.ptp(res.jaw, axis=0).max() < np.radians(0.3)
    # Expression components the landmarks barely see may wander a little; what they do to the face must not.
    assert np.median(np.ptp(fitted, axis=0)) < 0.5  # pixels, over the whole clip


def test_frames_without_a_face_are_interpolated_and_marked() -> None:
    flame = synthetic_flame()
    corr = shipped_correspondence()
    motion = default_motion(20, seed=3)
    pix, points, _ = project_motion(flame, motion, SIZE, corr)
    valid = np.ones(20, bool)
    valid[8:11] = False
    points[8:11] = 0.0  # what a detector leaves behind: nothing usable
    res = fit_video(points, valid, SIZE, flame, None, corr, device="cpu", settings=QUICK)
    assert not res.valid[8:11].any() and res.valid[:8].all() and res.valid[11:].all()
    assert np.isnan(res.landmark_error_px[8:11]).all() and np.isfinite(res.landmark_error_px[res.valid]).all()
    fitted = res.project(res.vertices(flame))
    assert np.median(np.linalg.norm(fitted[8:11] - pix[8:11], axis=-1)) < 4.0  # smooth motion bridged


def test_rigid_start_recovers_a_pose() -> None:
    rng = np.random.default_rng(0)
    model = rng.normal(scale=0.05, size=(40, 3))
    true_r = FLIP @ axis_angle_to_matrix(np.array([0.2, -0.4, 0.1]))
    cam = model @ true_r.T + np.array([0.01, -0.02, 5.0])  # far away: nearly orthographic
    points = cam[:, :2] / cam[:, 2:3] * 1000 + 256
    R, t = rigid_start(points[None], model, np.ones(40), 1000.0, 256.0)
    assert np.degrees(np.linalg.norm(matrix_to_axis_angle(R[0].T @ true_r))) < 0.5
    assert abs(t[0, 2] - 5.0) < 0.05


def test_bad_input_is_refused_in_one_line() -> None:
    flame = synthetic_flame()
    corr = shipped_correspondence()
    with pytest.raises(TrackingError, match="no frame has a face"):
        fit_video(np.zeros((3, 478, 2), np.float32), np.zeros(3, bool), SIZE, flame, None, corr, device="cpu")
    with pytest.raises(TrackingError, match="478, 2"):
        fit_video(np.zeros((3, 68, 2), np.float32), np.ones(3, bool), SIZE, flame, None, corr, device="cpu")
    with pytest.raises(TrackingError, match="one flag per frame"):
        fit_video(np.zeros((3, 478, 2), np.float32), np.ones(4, bool), SIZE, flame, None, corr, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_the_cpu_fit() -> None:
    flame = synthetic_flame()
    corr = shipped_correspondence()
    motion = default_motion(12, seed=4)
    _, points, _ = project_motion(flame, motion, SIZE, corr)
    cpu = fit_video(points, np.ones(12, bool), SIZE, flame, None, corr, device="cpu", settings=QUICK)
    gpu = fit_video(points, np.ones(12, bool), SIZE, flame, None, corr, device="cuda", settings=QUICK)
    assert np.abs(cpu.project(cpu.vertices(flame)) - gpu.project(gpu.vertices(flame))).max() < 0.5


def test_surface_points_move_linearly_with_the_expression() -> None:
    """`SurfaceFlame.expression_change` (what the photometric refinement moves the face's vertices by) equals
    evaluating FLAME again at the changed expression, with the jaw open and the eyes turned."""
    flame = synthetic_flame()
    rng = np.random.default_rng(3)
    vertices = np.array([0, 100, 2000, 3500, 3564])
    model = SurfaceFlame.at_vertices(flame, vertices, torch.device("cpu"))
    shape = torch.as_tensor(rng.normal(size=20), dtype=torch.float32)
    expr = torch.as_tensor(rng.normal(size=(4, 100)) * 0.5, dtype=torch.float32)
    jaw = torch.tensor([[0.3, 0.0, 0.0]]).expand(4, 3)
    eyes = torch.as_tensor(rng.normal(size=(4, 6)) * 0.2, dtype=torch.float32)
    rots = model.joint_rotations(jaw, eyes)
    lids = torch.full((4, 2), 0.2)
    d = torch.as_tensor(rng.normal(size=(4, 100)) * 0.5, dtype=torch.float32)
    moved = model.expression_change(shape, expr, rots)(d)
    expected = model(shape, expr + d, rots, lids) - model(shape, expr, rots, lids)
    assert expected.abs().max() > 1e-3  # the points do move
    assert torch.allclose(moved, expected, atol=1e-5)
    full = flame(shape=torch.nn.functional.pad(shape, (0, 280))[None].expand(4, -1), expression=expr + d,
                 jaw=jaw, eyes=eyes, eyelids=lids)
    assert torch.allclose(model(shape, expr + d, rots, lids), full[:, vertices], atol=1e-5)
