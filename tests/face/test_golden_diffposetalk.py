"""Golden test: our DiffPoseTalk reproduces upstream's arrays (checkpoint → HuBERT features → denoiser call →
windowed DDPM sampler with recorded noise → de-normalised coefficients) to 1e-4 for both model variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivers.face.diffposetalk.checkpoint import load_checkpoint, load_stats
from drivers.face.diffposetalk.model import DiffPoseTalkModel
from drivers.face.diffposetalk.offline import generate, normalise_shape
from drivers.face.diffposetalk.sampler import SamplerOptions, recorded_noise
from tests.golden_files import require

TOL = 1e-4
VARIANTS = ("head", "nohead")


def _require(variant: str) -> tuple[Path, Path, Path]:
    ckpt, stats, golden = require("diffposetalk", f"dpt_tiny_{variant}.pt", f"stats_{variant}.npz",
                                  f"golden_{variant}.npz")
    return ckpt, stats, golden


@pytest.fixture(scope="module", params=VARIANTS)
def golden(request: pytest.FixtureRequest) -> tuple[DiffPoseTalkModel, dict, dict]:
    ckpt_path, stats_path, golden_path = _require(request.param)
    torch.manual_seed(0)
    model = DiffPoseTalkModel.from_checkpoint(load_checkpoint(ckpt_path))
    with np.load(golden_path, allow_pickle=False) as g:
        arrays = {k: g[k] for k in g.files}
    return model, load_stats(stats_path), arrays


def _err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shape {a.shape} != golden {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def test_denoiser_call(golden: tuple[DiffPoseTalkModel, dict, dict]) -> None:
    model, stats, g = golden
    b = g["den_x_t"].shape[0]
    n = model.args.n_motions
    shape = torch.from_numpy(normalise_shape(g["shape"], stats)).expand(b, -1).unsqueeze(1)
    style = torch.from_numpy(g["style"]).expand(b, -1).unsqueeze(1)
    audio = torch.from_numpy(g["audio_feat"][:n]).expand(b, -1, -1)
    indicator = torch.ones(b, n) if model.args.use_indicator else None
    with torch.no_grad():
        out = model.denoising_net(
            torch.from_numpy(g["den_x_t"]), audio, torch.cat([shape, style], -1),
            model.start_motion_feat.expand(b, -1, -1), model.start_audio_feat.expand(b, -1, -1),
            torch.from_numpy(g["den_steps"]).long(), indicator)
    assert _err(out.numpy(), g["den_out"]) <= TOL


def test_whole_clip(golden: tuple[DiffPoseTalkModel, dict, dict]) -> None:
    model, stats, g = golden
    noise = torch.from_numpy(g["noise"])
    result = generate(model, g["audio"], g["shape"], g["style"], stats, recorded_noise(noise),
                      SamplerOptions(kind="ddpm", cfg_scale=(1.15, 3.0)))
    T = model.args.n_diff_steps
    assert noise.shape[0] == T + (result.n_windows - 1) * (T - 1)
    assert result.n_windows == int(g["n_windows"])
    assert result.n_pad_frames == int(g["n_pad_frames"])
    assert _err(result.audio_feat, g["audio_feat"]) <= TOL
    for key in ("motion", "exp", "pose"):
        assert _err(getattr(result, key), g[key]) <= TOL, key
    if not model.args.predict_head_pose:
        assert np.all(result.pose[:, :3] == 0)
