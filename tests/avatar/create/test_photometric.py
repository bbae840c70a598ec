"""The photometric refinement pulls a wrong head pose back onto a rendered face, mends a wrong expression
instead of turning it into a pose error, and keeps the rest."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from bridge.core.rotations import axis_angle_to_matrix
from drivers.avatar.flame.model import FlameModel
from drivers.avatar.flashavatar.create.photometric import (
    PhotometricSettings,
    face_vertices,
    refine_pose,
    refine_video,
)
from drivers.avatar.flashavatar.create.synthetic_flame import LEFT_EYEBALL
from drivers.avatar.flashavatar.create.synthetic_video import (
    SyntheticVideo,
    astronaut_texture,
    make_video,
    rotation_error_deg,
)
from drivers.avatar.flashavatar.create.tracking import TrackingError, TrackingResult
from tests.avatar.create.synthetic_head import synthetic_flame

SIZE = 256
FRAMES = 16


def _video() -> tuple[FlameModel, SyntheticVideo]:
    flame = synthetic_flame()
    return flame, make_video(flame, astronaut_texture(flame.v_template.numpy(), flame.faces.numpy()), FRAMES, SIZE,
                             seed=4)


def _truth_result(truth: dict[str, np.ndarray], **changes: np.ndarray) -> TrackingResult:
    fields = {k: truth[k] for k in ("shape", "expression", "jaw", "eyes", "eyelids", "R", "t", "K")}
    return TrackingResult(**{**fields, **changes}, image_size=SIZE, landmark_error_px=np.zeros(FRAMES, np.float32),
                          valid=np.ones(FRAMES, bool))


def _tilted(flame: FlameModel, truth: dict[str, np.ndarray]) -> TrackingResult:
    """The truth with the landmark fit's kind of pose error: a pitch and yaw that drift a few degrees off as the
    head turns (about the face's centre)."""
    phase = 2 * np.pi * np.arange(FRAMES) / FRAMES
    wrong = axis_angle_to_matrix(np.radians(np.stack([4 * np.sin(phase), 2 * np.cos(phase), 0 * phase], 1)))
    R_wrong = np.einsum("fij,fjk->fik", wrong, truth["R"].astype(np.float64))
    face_centre = flame.v_template.numpy()[face_vertices(flame)].mean(0)
    centre = np.einsum("fij,j->fi", truth["R"].astype(np.float64), face_centre) + truth["t"]
    t_wrong = np.einsum("fij,fj->fi", wrong, truth["t"] - centre) + centre
    return _truth_result(truth, R=R_wrong.astype(np.float32), t=t_wrong.astype(np.float32))


def test_wrong_poses_are_pulled_back_onto_the_face() -> None:
    flame, video = _video()
    truth = video.truth
    start = _tilted(flame, truth)
    before = rotation_error_deg(start.R, truth["R"])
    out = refine_pose(start, video.frames, flame, device="cpu")
    after = rotation_error_deg(out.R, truth["R"])
    assert np.median(after) < 0.5 * np.median(before), (before, after)
    for name in ("shape", "jaw", "eyes", "eyelids"):
        assert np.array_equal(getattr(out, name), getattr(start, name)), name
    assert np.abs(out.expression - start.expression).mean() < 0.1  # the true expression stays
    assert "photometric_s" in out.seconds


def test_a_wrong_expression_is_mended_rather_than_turned_into_a_pose_error() -> None:
    """The landmark fit's kind of error: expressions off by a lopsided offset, which bends the face sideways.
    Refining the pose alone swings the head to follow; refining the expression too keeps the head still."""
    flame, video = _video()
    truth = video.truth
    rng = np.random.default_rng(1)
    offset = np.zeros_like(truth["expression"])
    offset[:, :10] = rng.normal(scale=0.5, size=10)
    start = _truth_result(truth, expression=truth["expression"] + offset)
    pose_only = refine_pose(start, video.frames, flame, device="cpu", settings=PhotometricSettings(expression=False))
    both = refine_pose(start, video.frames, flame, device="cpu")
    err_pose_only = np.median(rotation_error_deg(pose_only.R, truth["R"]))
    err_both = np.median(rotation_error_deg(both.R, truth["R"]))
    assert err_both < 0.7 * err_pose_only, (err_both, err_pose_only)
    assert not np.array_equal(both.expression, start.expression)


def test_a_long_video_is_refined_in_overlapping_stretches() -> None:
    """refine_video reads at most a stretch of frames at a time, covers every frame, tells its progress, and
    brings a wrong pose back as well as refining everything at once does."""
    flame, video = _video()
    truth = video.truth
    start = _tilted(flame, truth)
    reads: list[tuple[int, int]] = []
    told: list[tuple[int, int]] = []

    def read(a: int, b: int) -> list[np.ndarray]:
        reads.append((a, b))
        return video.frames[a:b]

    out = refine_video(start, read, flame, device="cpu", chunk=10, overlap=4,
                       progress=lambda done, total: told.append((done, total)))
    assert max(b - a for a, b in reads) <= 10 and reads[0][0] == 0 and reads[-1][1] == FRAMES
    assert all(a1 < b0 for (_, b0), (a1, _) in itertools.pairwise(reads))  # each stretch overlaps the one before
    assert told[-1] == (FRAMES, FRAMES) and [d for d, _ in told] == sorted(d for d, _ in told)
    whole = refine_pose(start, video.frames, flame, device="cpu")
    err_stretches = rotation_error_deg(out.R, truth["R"])
    assert np.median(err_stretches) < np.median(rotation_error_deg(whole.R, truth["R"])) + 0.5
    assert np.median(err_stretches) < 0.5 * np.median(rotation_error_deg(start.R, truth["R"]))
    assert np.abs(np.diff(err_stretches)).max() < 1.0  # no jump where the stretches hand over
    assert np.array_equal(out.jaw, start.jaw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_refines_on_cuda_as_on_the_cpu() -> None:
    flame, video = _video()
    truth = video.truth
    start = _tilted(flame, truth)
    on_cpu = refine_video(start, lambda a, b: video.frames[a:b], flame, device="cpu", chunk=10, overlap=3)
    on_cuda = refine_video(start, lambda a, b: video.frames[a:b], flame,  # FLAME on the CPU, the work on CUDA
                           device="cuda", chunk=10, overlap=3)
    assert abs(np.median(rotation_error_deg(on_cuda.R, truth["R"]))
               - np.median(rotation_error_deg(on_cpu.R, truth["R"]))) < 0.2


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
