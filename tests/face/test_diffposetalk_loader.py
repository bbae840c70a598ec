"""Loading DiffPoseTalk files safely: real checkpoints load (both weight-norm spellings), corrupt, truncated,
foreign and malicious files are refused with a message, numpy side files are checked for shape and pickles."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from pathlib import Path, PosixPath

import numpy as np
import pytest
import torch

from drivers.face.diffposetalk.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_shape,
    load_stats,
    load_style,
)
from drivers.face.diffposetalk.model import DiffPoseTalkModel
from drivers.face.diffposetalk.schedule import SCHEDULE_KINDS, make_schedule
from tests.golden_files import require

POS = "audio_encoder.encoder.pos_conv_embed.conv."


def _file(name: str) -> Path:
    return require("diffposetalk", name)[0]


@pytest.fixture(scope="module")
def raw() -> dict:
    return torch.load(_file("dpt_tiny_nohead.pt"), map_location="cpu", weights_only=False)


def _save(tmp_path: Path, obj: object, name: str = "ck.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_loads_with_paths_in_args(raw: dict) -> None:
    assert isinstance(raw["args"].style_enc_ckpt, PosixPath)
    ck = load_checkpoint(_file("dpt_tiny_nohead.pt"))
    assert ck.args.motion_dim == 51 and not ck.args.predict_head_pose
    assert ck.args.hubert.num_layers == 1 and ck.args.hubert.conv_dim == (64,) * 7
    assert ck.args.hubert.pos_conv_kernel == 16 and ck.args.hubert.intermediate_size == 256


def test_old_weight_norm_spelling_gives_the_same_features(raw: dict, tmp_path: Path) -> None:
    state = dict(raw["model"])
    state[POS + "weight_g"] = state.pop(POS + "parametrizations.weight.original0")
    state[POS + "weight_v"] = state.pop(POS + "parametrizations.weight.original1")
    old = load_checkpoint(_save(tmp_path, {"args": raw["args"], "model": state, "iter": 7}))
    new = load_checkpoint(_file("dpt_tiny_nohead.pt"))
    audio = torch.randn(1, 6400, generator=torch.Generator().manual_seed(0))
    a = DiffPoseTalkModel.from_checkpoint(old).audio_features(audio, 10)
    b = DiffPoseTalkModel.from_checkpoint(new).audio_features(audio, 10)
    assert old.iteration == 7
    assert torch.allclose(a, b, atol=1e-6)


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"args": argparse.Namespace(x=1), "model": {}, "iter": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    data = _file("dpt_tiny_nohead.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"truncated|readable"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


def test_foreign_checkpoints(raw: dict, tmp_path: Path) -> None:
    se = _save(tmp_path, {"args": raw["args"], "encoder": {"motion_proj.weight": torch.zeros(128, 51)}, "iter": 1})
    with pytest.raises(CheckpointError, match="style-encoder"):
        load_checkpoint(se)
    plain = _save(tmp_path, {"state_dict": {"w": torch.zeros(2)}}, "plain.pt")
    with pytest.raises(CheckpointError, match="not a DiffPoseTalk"):
        load_checkpoint(plain)


def test_mismatches_name_the_key(raw: dict, tmp_path: Path) -> None:
    state = dict(raw["model"])
    state["denoising_net.PE"] = torch.zeros(1, 50, 256)
    with pytest.raises(CheckpointError, match=r"denoising_net\.PE"):
        load_checkpoint(_save(tmp_path, {"args": raw["args"], "model": state, "iter": 0}))
    args = argparse.Namespace(**{**vars(raw["args"]), "n_layers": 3})
    with pytest.raises(CheckpointError, match=r"denoising_net\.transformer\.layers"):
        load_checkpoint(_save(tmp_path, {"args": args, "model": raw["model"], "iter": 0}, "b.pt"))
    state = dict(raw["model"])
    state["audio_encoder.encoder.layers.0.attention.q_proj.weight"] = torch.zeros(768, 700)
    ck = load_checkpoint(_save(tmp_path, {"args": raw["args"], "model": state, "iter": 0}, "c.pt"))
    with pytest.raises(CheckpointError, match=r"q_proj\.weight"):
        DiffPoseTalkModel.from_checkpoint(ck)
    state = dict(raw["model"])
    del state["denoising_net.motion_dec.0.bias"]
    ck = load_checkpoint(_save(tmp_path, {"args": raw["args"], "model": state, "iter": 0}, "d.pt"))
    with pytest.raises(CheckpointError, match=r"motion_dec\.0\.bias"):
        DiffPoseTalkModel.from_checkpoint(ck)


def test_style_shape_and_stats_files(tmp_path: Path) -> None:
    np.save(tmp_path / "style.npy", np.ones(128, np.float32))
    assert load_style(tmp_path / "style.npy").shape == (128,)
    np.save(tmp_path / "short.npy", np.ones(64, np.float32))
    with pytest.raises(CheckpointError, match=r"\(128,\)"):
        load_style(tmp_path / "short.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="pickled"):
        load_style(tmp_path / "obj.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CheckpointError):
        load_style(tmp_path / "bad.npy")
    np.save(tmp_path / "seq.npy", np.ones((30, 100), np.float32))
    assert load_shape(tmp_path / "seq.npy").shape == (100,)
    stats = load_stats(_file("stats_head.npz"))
    assert stats["exp_mean"].shape == (50,) and stats["pose_std"].shape == (6,)
    np.savez(tmp_path / "st.npz", **{k: v for k, v in stats.items() if k != "pose_std"})  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="pose_std"):
        load_stats(tmp_path / "st.npz")
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("exp_mean.npy", pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError):
        load_stats(tmp_path / "z.npz")


def test_all_schedule_kinds() -> None:
    for kind in SCHEDULE_KINDS:
        s = make_schedule(50, kind)
        assert s.betas.shape == (51,) and s.betas[0] == 0
        assert torch.all(s.alpha_bars[1:] < 1) and torch.all(s.alpha_bars[1:] > 0)
        assert torch.all(s.alpha_bars[1:] <= s.alpha_bars[:-1])
    cos = make_schedule(500, "cosine")
    assert float(cos.betas[1]) == pytest.approx(1e-4, rel=1e-3)
    assert float(cos.betas[500]) == pytest.approx(0.999, rel=1e-4)
    assert float(cos.alpha_bars[250]) == pytest.approx(0.4938, abs=2e-4)
    with pytest.raises(ValueError, match="unknown"):
        make_schedule(10, "exotic")
