"""The ground-truth test video: the rendered head is where its truth says, it moves as told, and the mp4 and
truth file decode back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivers.avatar.flashavatar.create.raster import rasterise
from drivers.avatar.flashavatar.create.synthetic_video import (
    BACKGROUND,
    default_motion,
    make_video,
    write_video,
)
from tests.avatar.create.synthetic_head import synthetic_flame


def test_rasteriser_covers_a_triangle_exactly() -> None:
    pix = torch.tensor([[2.0, 2.0], [12.0, 2.0], [2.0, 12.0], [20.0, 20.0]])
    frags = rasterise(pix, torch.tensor([1.0, 1.0, 1.0, 2.0]), torch.tensor([[0, 1, 2], [1, 3, 2]]), 24, 24)
    assert frags.face[2, 2] == 0 and frags.face[5, 5] == 0 and frags.face[15, 15] == 1 and frags.face[0, 0] == -1
    # Pixel centres on integers: 66 pixels lie in the first triangle, 11 of them on the edge it shares.
    ys, xs = np.mgrid[:24, :24]
    strictly_inside = (xs >= 2) & (ys >= 2) & (xs + ys < 14)
    on_edge = (xs >= 2) & (ys >= 2) & (xs + ys == 14)
    assert ((frags.face.numpy() == 0) == strictly_inside | (on_edge & (frags.face.numpy() == 0))).all()
    assert int(strictly_inside.sum()) == 55 and (frags.face.numpy()[on_edge] >= 0).all()
    np.testing.assert_allclose(frags.bary[2, 7].numpy(), [0.5, 0.5, 0.0], atol=1e-6)
    assert frags.depth[5, 5] == pytest.approx(1.0)


def test_video_frames_follow_their_truth(tmp_path: Path) -> None:
    from drivers.avatar.flashavatar.create.synthetic_video import astronaut_texture

    flame = synthetic_flame()
    frames, size = 6, 128
    motion = default_motion(frames)
    motion.head[:, 1] = np.radians(np.linspace(-25, 25, frames))
    video = make_video(flame, astronaut_texture(flame.v_template.numpy(), flame.faces.numpy()), frames, size, motion=motion)
    truth = video.truth
    assert truth["vertices_px"].shape == (frames, 5023, 2) and truth["R"].shape == (frames, 3, 3)
    for i, img in enumerate(video.frames):
        covered = np.any(np.abs(img.astype(np.float32) - BACKGROUND) > 1, axis=2)
        nose = np.round(truth["vertices_px"][i, 3564]).astype(int)  # the nose tip is always in view
        assert covered[nose[1], nose[0]]
        xs = np.nonzero(covered)[1]
        uv = truth["vertices_px"][i]
        assert xs.min() >= uv[:, 0].min() - 1 and xs.max() <= uv[:, 0].max() + 1
    # The head turns: the nose tip sweeps across the frame from one side to the other.
    assert truth["vertices_px"][-1, 3564, 0] - truth["vertices_px"][0, 3564, 0] > 0.2 * size
    write_video(video, tmp_path / "clip.mp4")
    import av

    with av.open(str(tmp_path / "clip.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == frames and decoded[0].shape == (size, size, 3)
    assert np.abs(decoded[3].astype(int) - video.frames[3]).mean() < 4
    with np.load(tmp_path / "clip.truth.npz") as z:
        np.testing.assert_allclose(z["jaw"], truth["jaw"])
