"""Batched offline rendering gives the serial render()'s images (golden avatar, CPU renderer, small size):
batches chunk, per-frame views match set_view + render()."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bridge.core.face_params import FaceParams
from drivers.avatar.flashavatar.offline import render_batch
from tests.conftest import needs_golden
from tests.golden_files import FILES, golden_dir

GOLDEN = golden_dir("flashavatar")
pytestmark = needs_golden("flashavatar", *FILES)
W, H = 40, 32


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    os.environ.setdefault("AVATAR_BRIDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    z = np.load(GOLDEN / "golden_seed0.npz")
    return FlashAvatarAvatar(
        checkpoint=GOLDEN / "chkpnt_seed0.pth", flame_model=GOLDEN / "flame_synthetic.pkl",
        flame_masks=GOLDEN / "FLAME_masks_synthetic.pkl", flame_mesh=GOLDEN / "FlameMesh.obj", eyelids_dir=GOLDEN,
        shape=z["shape"], width=W, height=H, renderer="cpu", device="cpu", background=(0.0, 1.0, 0.0),
        transparent=True,
    )


def _params() -> list[FaceParams]:
    z = np.load(GOLDEN / "golden_seed0.npz")
    ps = [FaceParams.from_6d(z["expr"][i], z["jaw_pose"][i], z["eyes_pose"][i], z["eyelids"][i]) for i in range(3)]
    return [*ps, ps[1].copy(head=np.array([0.1, 0.4, 0.0], np.float32)),
            ps[2].copy(neck=np.array([0.2, 0.0, 0.1], np.float32), translation=np.array([0, 0.01, 0], np.float32))]


@pytest.fixture(scope="module")
def serial(avatar):  # type: ignore[no-untyped-def]
    return [avatar.render(p) for p in _params()]


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Batched deformation runs the MLP over B frames at once, so float sums may round differently: allow one
    level on a few pixels, nothing more."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_batched_equals_serial_and_chunks(avatar, serial) -> None:  # type: ignore[no-untyped-def]
    got = render_batch(avatar, _params(), max_batch=2)  # 5 frames → chunks of 2, 2, 1
    assert len(got) == len(serial)
    for img, ref in zip(got, serial):
        assert img.rgb.shape == (H, W, 3) and img.alpha is not None and ref.alpha is not None
        _close(img.rgb, ref.rgb)
        _close(img.alpha, ref.alpha)


def test_batched_views_equal_set_view(avatar) -> None:  # type: ignore[no-untyped-def]
    base = avatar.base_camera.viewmat.clone()
    views = []
    for yaw in (-0.3, 0.0, 0.25):
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]], np.float32)
        views.append(base.numpy() @ rot)
    views_arr = np.stack(views)
    ps = _params()[2:5]
    try:
        ref = []
        for v, p in zip(views_arr, ps):
            avatar.set_view(v)
            ref.append(avatar.render(p))
    finally:
        avatar.set_view(base)
    got = render_batch(avatar, ps, views=views_arr)
    for img, r in zip(got, ref):
        _close(img.rgb, r.rgb)
    assert not np.array_equal(got[0].rgb, got[1].rgb)
    with pytest.raises(ValueError, match="expected"):
        render_batch(avatar, ps, views=views_arr[:2])
