"""FlashAvatar checkpoints and tracker frames: upstream's layout loads; unsafe, damaged and foreign files are
refused with messages that say what is wrong."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.core.rotations_torch import quat_product
from drivers.avatar.flame.tracker import TrackerFrameError, load_tracker_frame, tracker_camera
from drivers.avatar.flashavatar.checkpoint import CheckpointError, load_checkpoint
from drivers.avatar.flashavatar.model import DeformMLP, positional_encoding
from drivers.avatar.splat.cameras import NEAR
from tests.conftest import needs_golden
from tests.golden_files import FILES, golden_dir

N = 10


class Payload:
    """Any class other than tensors/containers: a weights-only loader must refuse it."""

    def __init__(self) -> None:
        self.x = 1


def _upstream_tuple(n: int = N, in_dim: int = 171, dc_shape: tuple[int, ...] | None = None) -> tuple:  # type: ignore[type-arg]
    torch.manual_seed(0)
    mlp = DeformMLP(input_dim=in_dim)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-4)
    gauss = (
        3,
        torch.zeros(n, 3),
        torch.nn.Parameter(torch.rand(dc_shape or (n, 1, 3))),
        torch.nn.Parameter(torch.zeros(n, 15, 3)),
        torch.nn.Parameter(torch.full((n, 3), -6.0)),
        torch.nn.Parameter(torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1)),
        torch.nn.Parameter(torch.zeros(n, 1)),
        torch.zeros(n),
        torch.zeros(n, 1),
        torch.zeros(n, 1),
        {"state": {}, "param_groups": []},
        0,
    )
    return ((OrderedDict(mlp.state_dict()), opt.state_dict()), gauss, 150000)


def test_loads_upstream_layout(tmp_path: Path) -> None:
    p = tmp_path / "chkpnt150000.pth"
    torch.save(_upstream_tuple(), p)
    ck = load_checkpoint(p)
    assert (ck.num_gaussians, ck.sh_degree, ck.active_sh_degree, ck.iteration) == (N, 3, 3, 150000)
    assert (ck.input_dim, ck.hidden_dim, ck.hidden_layers, ck.output_dim) == (171, 256, 6, 10)
    assert ck.num_mlp_params == 375_562


def test_refuses_pickled_objects(tmp_path: Path) -> None:
    p = tmp_path / "evil.pth"
    torch.save((Payload(), (), 0), p)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(p)


def test_wrong_structures(tmp_path: Path) -> None:
    p = tmp_path / "c.pth"
    torch.save((1, 2), p)
    with pytest.raises(CheckpointError, match=r"tuple of length 2.*deform_model, gaussians, iteration"):
        load_checkpoint(p)
    deform, gauss, it = _upstream_tuple()
    torch.save((deform, gauss[:11], it), p)
    with pytest.raises(CheckpointError, match="12 entries, found 11"):
        load_checkpoint(p)
    torch.save(_upstream_tuple(dc_shape=(N, 2, 3)), p)
    with pytest.raises(CheckpointError, match=r"_features_dc has shape \(10, 2, 3\), expected \('N', 1, 3\)"):
        load_checkpoint(p)
    torch.save(_upstream_tuple(in_dim=170), p)
    with pytest.raises(CheckpointError, match="takes 170 inputs"):
        load_checkpoint(p)
    torch.save({"model": 1}, p)
    with pytest.raises(CheckpointError, match="holds a dict"):
        load_checkpoint(p)


def test_truncated_and_foreign_bytes(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(_upstream_tuple(), good)
    raw = good.read_bytes()
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)
    txt = tmp_path / "notes.pth"
    txt.write_text("hello")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(txt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")


def test_quaternion_order_and_encoding() -> None:
    a = torch.tensor([0.9, 0.1, -0.3, 0.2])
    b = torch.tensor([0.7, -0.2, 0.4, 0.1])
    ab, ba = quat_product(a, b), quat_product(b, a)
    assert not torch.allclose(ab, ba)  # order matters: base on the left
    i, j = torch.tensor([0.0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 0])
    assert torch.allclose(quat_product(i, j), torch.tensor([0.0, 0, 0, 1]))  # i j = k
    pe = positional_encoding(torch.tensor([[0.5, -1.0, 2.0]]))
    assert pe.shape == (1, 51)
    assert torch.allclose(pe[0, 3:6], torch.sin(torch.tensor([0.5, -1.0, 2.0])))
    assert torch.allclose(pe[0, -3:], torch.cos(torch.tensor([0.5, -1.0, 2.0]) * 128))


def _frame_dict() -> dict[str, object]:
    return {
        "flame": {"exp": np.zeros((1, 100), np.float32), "shape": np.full((1, 300), 0.1, np.float32),
                  "jaw": np.array([[1, 0, 0, 0, 1, 0]], np.float32), "eyes": np.tile([1, 0, 0, 0, 1, 0], (1, 2)).astype(np.float32),
                  "eyelids": np.zeros((1, 2), np.float32)},
        "opencv": {"R": np.eye(3, dtype=np.float32)[None], "t": np.array([[0.0, 0.0, 1.0]], np.float32),
                   "K": np.array([[[1500.0, 0, 250], [0, 1490.0, 262], [0, 0, 1]]], np.float32)},
        "img_size": np.array([512, 512]),
        "frame_id": "00000",
        "global_step": 100,
    }


def test_tracker_frame(tmp_path: Path) -> None:
    p = tmp_path / "00000.frame"
    torch.save(_frame_dict(), p)
    fr = load_tracker_frame(p)
    assert fr.shape is not None and fr.shape[0] == pytest.approx(0.1)
    cam = tracker_camera(fr)
    assert cam.K[0, 2] == 256 and cam.K[1, 2] == 256  # upstream ignores the tracked principal point
    assert cam.K[0, 0] == 1500 and cam.near == NEAR
    big = tracker_camera(fr, 1920, 1080, zoom=2.0)
    assert big.K[0, 0] == pytest.approx(1500 * 1080 / 512 * 2) and big.K[0, 2] == 960
    evil = tmp_path / "evil.frame"
    torch.save({"opencv": Payload()}, evil)
    with pytest.raises(TrackerFrameError, match="refusing"):
        load_tracker_frame(evil)
    nocam = tmp_path / "nocam.frame"
    torch.save({"flame": {}}, nocam)
    with pytest.raises(TrackerFrameError, match="no 'opencv' camera"):
        load_tracker_frame(nocam)


GOLDEN = golden_dir("flashavatar")


@needs_golden("flashavatar", *FILES)
def test_gaussian_count_mismatch_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.avatar.flashavatar.model import FlashAvatarModel

    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    p = tmp_path / "small.pth"
    torch.save(_upstream_tuple(n=13453), p)
    with pytest.raises(CheckpointError, match="13453 Gaussians but this FLAME mesh/mask set gives 12975"):
        FlashAvatarModel.from_files(p, GOLDEN / "flame_synthetic.pkl", GOLDEN / "FLAME_masks_synthetic.pkl",
                                    GOLDEN / "FlameMesh.obj", GOLDEN, None)
