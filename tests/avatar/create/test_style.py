"""The style encoder reproduces upstream DiffPoseTalk's on reference vectors made by upstream's own code
(tests/data/golden_style/README.md), head and no-head encoders, full and short windows; the tracked motion is
packed as upstream packs coefficients; bad checkpoints are refused in one line; style.npy lands next to the
avatar, referenced from avatar.toml."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.core.config import load_config
from drivers.avatar.flashavatar.create.style import (
    FLIP,
    StyleError,
    best_start,
    encode,
    load_encoder,
    tracked_motion,
    write_style,
)
from drivers.face.diffposetalk.checkpoint import load_stats

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden_style"


@pytest.mark.parametrize("variant", ["head", "nohead"])
@pytest.mark.parametrize("start", [0, 20, 60])
def test_matches_upstreams_style_encoder(variant: str, start: int) -> None:
    model = load_encoder(GOLDEN / f"se_{variant}.pt")
    assert model.args.no_head_pose == (variant == "nohead") and model.args.feature_dim == 32
    stats = load_stats(GOLDEN / "stats.npz")
    with np.load(GOLDEN / "coef.npz") as z:
        exp, pose = z["exp"], z["pose"]
    got = encode(model, exp, pose, stats, start)
    with np.load(GOLDEN / "golden.npz") as g:
        want = g[f"style_{variant}_start{start}"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4


def test_the_encoder_ignores_frame_order_as_upstreams_does() -> None:
    model = load_encoder(GOLDEN / "se_head.pt")
    stats = load_stats(GOLDEN / "stats.npz")
    with np.load(GOLDEN / "coef.npz") as z:
        exp, pose = z["exp"][:100], z["pose"][:100]
    perm = np.random.default_rng(0).permutation(100)
    a, b = encode(model, exp, pose, stats), encode(model, exp[perm], pose[perm], stats)
    assert np.abs(a - b).max() < 1e-4
    assert np.abs(a - encode(model, exp * 0.5, pose, stats)).max() > 1e-2  # but not the motion itself


def test_tracked_motion_is_upstreams_coefficient_layout() -> None:
    from drivers.avatar.flashavatar.create.tracking import TrackingResult

    n = 3
    yaw = np.deg2rad([0.0, 10.0, -20.0])
    head = np.stack([np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) for a in yaw])
    R = (FLIP @ head).astype(np.float32)  # the camera of a head turned by `yaw` about FLAME's y axis
    expr = np.arange(n * 100, dtype=np.float32).reshape(n, 100)
    jaw = np.tile(np.array([0.2, 0.0, 0.0], np.float32), (n, 1))
    tr = TrackingResult(shape=np.zeros(300, np.float32), expression=expr, jaw=jaw,
                        eyes=np.zeros((n, 6), np.float32), eyelids=np.zeros((n, 2), np.float32), R=R,
                        t=np.zeros((n, 3), np.float32), K=np.eye(3, dtype=np.float32), image_size=512,
                        landmark_error_px=np.zeros(n, np.float32), valid=np.ones(n, bool))
    exp, pose = tracked_motion(tr)
    assert exp.shape == (n, 50) and np.array_equal(exp, expr[:, :50])
    assert np.allclose(pose[:, 1], yaw, atol=1e-5) and np.allclose(pose[:, [0, 2]], 0, atol=1e-5)
    assert np.allclose(pose[:, 3:], jaw)
    assert best_start(np.array([0, 1, 1, 1, 0, 1], bool), 3) == 1


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    denoiser_like = tmp_path / "iter.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "iter": 1}, denoiser_like)
    with pytest.raises(StyleError, match="not a DiffPoseTalk style-encoder checkpoint"):
        load_encoder(denoiser_like)
    evil = tmp_path / "evil.pt"
    torch.save({"args": {}, "encoder": {}, "x": subprocess.Popen}, evil)  # a class outside the allow-list
    with pytest.raises(StyleError, match="refused to load"):
        load_encoder(evil)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((GOLDEN / "se_head.pt").read_bytes()[:5000])
    with pytest.raises(StyleError, match="not a readable PyTorch checkpoint"):
        load_encoder(cut)
    with pytest.raises(StyleError, match="does not exist"):
        load_encoder(tmp_path / "none.pt")


def test_write_style_puts_style_npy_beside_the_avatar(tmp_path: Path) -> None:
    from drivers.avatar.flashavatar.create.tracking import TrackingResult

    n = 120
    rng = np.random.default_rng(1)
    tr = TrackingResult(shape=np.zeros(300, np.float32), expression=rng.normal(0, 1, (n, 100)).astype(np.float32),
                        jaw=np.zeros((n, 3), np.float32), eyes=np.zeros((n, 6), np.float32),
                        eyelids=np.zeros((n, 2), np.float32), R=np.tile(FLIP.astype(np.float32), (n, 1, 1)),
                        t=np.zeros((n, 3), np.float32), K=np.eye(3, dtype=np.float32), image_size=512,
                        landmark_error_px=np.zeros(n, np.float32), valid=np.ones(n, bool))
    (tmp_path / "avatar.toml").write_text('[video]\nfps = 25\n')
    path = write_style(GOLDEN / "se_nohead.pt", GOLDEN / "stats.npz", tr, tmp_path)
    vec = np.load(path)
    assert vec.shape == (32,) and vec.dtype == np.float32 and np.isfinite(vec).all()
    cfg = load_config(tmp_path / "avatar.toml")
    assert cfg.face.diffposetalk.style == path
