"""Tracking written as metrical-tracker `.frame` files is what `avatar train`'s loader reads: upstream's pairing
(frame m <-> image m + 1), the FLAME parameters in 6D form, the OpenCV camera and the shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bridge.core.rotations import axis_angle_to_matrix, rotation_6d_to_matrix
from drivers.avatar.flame.tracker import load_tracker_frame
from drivers.avatar.flashavatar.create.frame_files import write_frames
from drivers.avatar.flashavatar.create.tracking import FLIP, TrackingResult
from drivers.avatar.flashavatar.train import dataset as ds


def _result(frames: int) -> TrackingResult:
    rng = np.random.default_rng(0)
    aa = rng.normal(scale=0.2, size=(frames, 3))
    valid = np.ones(frames, bool)
    valid[2] = False
    return TrackingResult(
        shape=rng.normal(size=300).astype(np.float32), expression=rng.normal(size=(frames, 100)).astype(np.float32),
        jaw=np.c_[rng.uniform(0, 0.3, frames), np.zeros((frames, 2))].astype(np.float32),
        eyes=rng.normal(scale=0.1, size=(frames, 6)).astype(np.float32),
        eyelids=rng.uniform(0, 1, (frames, 2)).astype(np.float32),
        R=(FLIP @ axis_angle_to_matrix(aa)).astype(np.float32),
        t=np.c_[rng.normal(scale=0.01, size=(frames, 2)), np.full(frames, 0.6)].astype(np.float32),
        K=np.array([[900, 0, 256], [0, 900, 256], [0, 0, 1]], np.float32), image_size=512,
        landmark_error_px=np.ones(frames, np.float32), valid=valid)


def _images(root: Path, numbers: range) -> None:
    for sub in ("imgs", "alpha", "parsing"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n in numbers:
        stem = f"{n:05d}"
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / "imgs" / f"{stem}.jpg")
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(root / "alpha" / f"{stem}.jpg")
        for part in ("neckhead", "mouth"):
            Image.fromarray(np.full((8, 8), 255, np.uint8)).save(root / "parsing" / f"{stem}_{part}.png")


def test_frames_load_through_the_training_loader(tmp_path: Path) -> None:
    res = _result(6)
    _images(tmp_path, range(6))
    written = write_frames(res, tmp_path / "tracking" / "checkpoint")
    assert [p.name for p in written] == [f"{m:05d}.frame" for m in range(5)]  # image 0 has no tracker frame
    assert not list((tmp_path / "tracking" / "checkpoint").glob("*.tmp"))
    layout = ds.find_layout(tmp_path)
    frames = ds.list_frames(layout)
    assert [f.image.name for f in frames] == [f"{n:05d}.jpg" for n in range(1, 6)]
    tracking = ds.load_tracking(frames)
    np.testing.assert_allclose(tracking.shape, res.shape, atol=1e-6)
    np.testing.assert_allclose(tracking.R.numpy(), res.R[1:], atol=1e-6)
    np.testing.assert_allclose(tracking.t.numpy(), res.t[1:], atol=1e-6)
    cond = tracking.cond.numpy()  # expr 100, jaw 6D, eyes 2 x 6D, eyelids 2 per frame
    np.testing.assert_allclose(cond[:, :100], res.expression[1:], atol=1e-6)
    np.testing.assert_allclose(rotation_6d_to_matrix(cond[:, 100:106]), axis_angle_to_matrix(res.jaw[1:]), atol=1e-5)
    np.testing.assert_allclose(rotation_6d_to_matrix(cond[:, 106:112]), axis_angle_to_matrix(res.eyes[1:, :3]),
                               atol=1e-5)
    np.testing.assert_allclose(rotation_6d_to_matrix(cond[:, 112:118]), axis_angle_to_matrix(res.eyes[1:, 3:]),
                               atol=1e-5)
    np.testing.assert_allclose(cond[:, 118:], res.eyelids[1:], atol=1e-6)
    first = load_tracker_frame(written[0])
    assert (first.height, first.width) == (512, 512)
    np.testing.assert_allclose(first.K, res.K, atol=1e-6)


def test_numbered_images_and_dropped_frames(tmp_path: Path) -> None:
    res = _result(5)
    written = write_frames(res, tmp_path, image_numbers=[3, 4, 5, 6, 7], skip_invalid=True)
    assert [p.name for p in written] == ["00002.frame", "00003.frame", "00005.frame", "00006.frame"]  # 5 dropped
    with pytest.raises(ValueError, match="image numbers"):
        write_frames(res, tmp_path, image_numbers=[1, 2])
