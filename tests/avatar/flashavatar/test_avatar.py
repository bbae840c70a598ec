"""The FlashAvatar driver end to end on the golden avatar: Avatar protocol, head motion through the camera,
transparency, .ply export and the CLI's offline render (real files, the CPU splatting renderer)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.core.face_params import FaceParams
from bridge.core.interfaces import Avatar
from drivers.avatar.flashavatar.offline import world_gaussians
from tests.conftest import needs_golden
from tests.golden_files import FILES, golden_dir

GOLDEN = golden_dir("flashavatar")
pytestmark = needs_golden("flashavatar", *FILES)
SIZE = 64


def _kwargs(tmp: Path) -> dict[str, object]:
    shape = tmp / "shape.npy"
    np.save(shape, np.load(GOLDEN / "golden_seed0.npz")["shape"])
    return {"checkpoint": GOLDEN / "chkpnt_seed0.pth", "flame_model": GOLDEN / "flame_synthetic.pkl",
            "flame_masks": GOLDEN / "FLAME_masks_synthetic.pkl", "flame_mesh": GOLDEN / "FlameMesh.obj",
            "eyelids_dir": GOLDEN, "shape": shape, "width": SIZE, "height": SIZE, "renderer": "cpu",
            "device": "cpu", "background": (0.0, 1.0, 0.0), "transparent": False, "zoom": 1.0}


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    tmp = tmp_path_factory.mktemp("fa")
    os.environ["AVATAR_BRIDGE_CACHE"] = str(tmp / "cache")
    return FlashAvatarAvatar(**_kwargs(tmp))  # type: ignore[arg-type]


def test_renders_through_the_avatar_protocol(avatar) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(avatar, Avatar)
    img = avatar.render(FaceParams.neutral())
    assert img.rgb.shape == (SIZE, SIZE, 3) and img.rgb.dtype == np.uint8 and img.alpha is None
    corner = img.rgb[0, 0].astype(int)
    assert corner.tolist() == [0, 255, 0]  # upstream's green background
    assert (np.abs(img.rgb.astype(int) - [0, 255, 0]).sum(-1) > 30).mean() > 0.05  # the head covers pixels


def test_head_rotation_moves_the_view_like_flame(avatar) -> None:  # type: ignore[no-untyped-def]
    base = FaceParams.neutral()
    turned = base.copy(head=np.array([0.0, 0.4, 0.0], np.float32))
    g0, cam0 = avatar.gaussians(base)
    g1, cam1 = avatar.gaussians(turned)
    assert torch.equal(g0.means, g1.means)  # Gaussians stay in FLAME's frame ...
    # ... and the camera moves so that a point p seen under cam1 lands where FLAME's rotated p lands under cam0.
    from drivers.avatar.flame.model import head_motion

    m = torch.as_tensor(head_motion(turned.head, turned.neck, turned.translation,
                                    avatar.model.joints0.cpu().numpy().astype(np.float64)), dtype=torch.float32)
    p = torch.cat([g0.means[:50], torch.ones(50, 1)], 1)
    assert torch.allclose((cam1.viewmat @ p.T).T, (cam0.viewmat @ (m @ p.T)).T, atol=1e-5)
    a = avatar.render(base).rgb.astype(int)
    b = avatar.render(turned).rgb.astype(int)
    assert np.abs(a - b).mean() > 1.0


def test_transparent_and_ply(tmp_path: Path) -> None:
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
    from drivers.avatar.flashavatar.ply_export import read_ply, write_ply

    os.environ.setdefault("AVATAR_BRIDGE_CACHE", str(tmp_path / "cache"))
    kw = _kwargs(tmp_path) | {"transparent": True}
    av = FlashAvatarAvatar(**kw)  # type: ignore[arg-type]
    img = av.render(FaceParams.neutral())
    assert img.alpha is not None and img.alpha.shape == (SIZE, SIZE)
    assert img.alpha[0, 0] == 0 and img.alpha.max() > 200
    params = FaceParams.neutral().copy(head=np.array([0.0, 0.3, 0.0], np.float32))
    g = world_gaussians(av, params)
    ply = read_ply(write_ply(g, tmp_path / "a.ply"))
    assert len(ply["x"]) == 12975 and len(ply) == 62
    np.testing.assert_allclose(ply["x"], g.means[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-ply["opacity"])), g.opacities.numpy(), atol=1e-5)
    np.testing.assert_allclose(ply["f_rest_0"], g.colors[:, 1, 0].numpy())  # channel-major rest coefficients
    np.testing.assert_allclose(ply["f_rest_15"], g.colors[:, 1, 1].numpy())


def test_cli_render_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    z = np.load(GOLDEN / "golden_seed0.npz")
    seq = tmp_path / "seq.npz"
    np.savez(seq, expr=z["expr"][:2], jaw_pose=z["jaw_pose"][:2], eyes_pose=z["eyes_pose"][:2],
             eyelids=z["eyelids"][:2])
    kw = _kwargs(tmp_path)
    common = ["--checkpoint", str(kw["checkpoint"]), "--flame-model", str(kw["flame_model"]),
              "--flame-masks", str(kw["flame_masks"]), "--flame-mesh", str(kw["flame_mesh"]),
              "--eyelids-dir", str(GOLDEN), "--shape", str(kw["shape"]), "--width", "64", "--height", "64",
              "--device", "cpu", "--renderer", "cpu"]
    out = tmp_path / "v.mp4"
    assert main(["avatar", "render", *common, "--params", str(seq), "--out", str(out)]) == 0
    import av

    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 2 and frames[0].shape == (64, 64, 3)
    assert main(["avatar", "info", str(kw["checkpoint"])]) == 0
    assert "12975" in capsys.readouterr().out
    assert main(["avatar", "info", str(seq)]) == 2
    assert "not a torch checkpoint" in capsys.readouterr().err


def test_config_builds_the_driver(tmp_path: Path) -> None:
    """`[avatar] kind = "flashavatar"` plus its files is enough for the daemon to build this driver."""
    from bridge.core.config import load_config
    from bridge.runtime import registry

    kw = _kwargs(tmp_path)
    cfg_file = tmp_path / "bridge.toml"
    cfg_file.write_text(
        "[video]\nwidth = 64\nheight = 64\n[avatar]\nkind = 'flashavatar'\nrenderer = 'cpu'\ndevice = 'cpu'\n"
        + "".join(f"{k} = '{kw[k]}'\n" for k in ("checkpoint", "flame_model", "flame_masks", "flame_mesh",
                                                 "eyelids_dir", "shape"))
    )
    cfg = load_config(cfg_file, environ={})
    av = registry.create("avatar", cfg.avatar.kind, cfg)
    img = av.render(FaceParams.neutral())
    assert img.rgb.shape == (64, 64, 3)
    assert img.rgb[0, 0].tolist() == [0, 0, 0]  # the config's background (black by default)
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    again = FlashAvatarAvatar.from_config(cfg)
    assert np.array_equal(again.render(FaceParams.neutral()).rgb, img.rgb)


def test_framed_head_renders_its_region_and_reports_its_neck(tmp_path: Path) -> None:
    """With a framing, the head renders only its region of a 16:9 frame, with alpha over black whatever the
    colour asked for, the same picture as the whole frame rendered through the same intrinsics; its neck base
    (FLAME's root joint) stays put when only the head turns about it, and moves with the neck's rotation."""
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
    from drivers.avatar.scene.framing import HeadFraming

    os.environ.setdefault("AVATAR_BRIDGE_CACHE", str(tmp_path / "cache"))
    framing = HeadFraming.preset("webcam", 160, 90)
    kw = _kwargs(tmp_path) | {"width": 160, "height": 90}
    av = FlashAvatarAvatar(**kw, framing=framing)  # type: ignore[arg-type]
    img = av.render(FaceParams.neutral())
    assert img.alpha is not None and img.rgb.shape[:2] == (av.height, av.width) and av.width < 160
    ox, oy = img.origin
    assert img.alpha[0, 0] == 0 and tuple(img.rgb[0, 0]) == (0, 0, 0)  # not the green asked for: composited later
    _, xs = np.nonzero(img.alpha > 128)
    assert abs((xs.mean() + ox) - 80) < 6  # centred across, as the framing says
    # The region is the whole frame's picture there: render the whole frame through the framing's intrinsics.
    whole = FlashAvatarAvatar(**(kw | {"transparent": True}))  # type: ignore[arg-type]
    placed = av.placement
    assert placed is not None
    whole.base_camera.K.copy_(torch.tensor(placed.K, dtype=torch.float32))
    full = whole.render(FaceParams.neutral())
    assert full.alpha is not None and full.rgb.shape == (90, 160, 3)
    h, w = img.alpha.shape
    assert np.abs(full.alpha[oy : oy + h, ox : ox + w].astype(int) - img.alpha.astype(int)).mean() < 1.0
    assert np.abs(full.rgb[oy : oy + h, ox : ox + w].astype(int) - img.rgb.astype(int)).mean() < 1.0
    outside = np.ones((90, 160), bool)
    outside[oy : oy + h, ox : ox + w] = False
    assert full.alpha[outside].max() < 8  # nothing of the head lies outside its region
    rest = img.neck
    assert rest is not None
    turned = av.render(FaceParams.neutral().copy(head=np.array([0.0, 0.3, 0.0], np.float32))).neck
    bent = av.render(FaceParams.neutral().copy(neck=np.array([0.0, 0.0, 0.3], np.float32))).neck
    assert turned is not None and bent is not None
    assert abs(turned.x - rest.x) < 0.05 and abs(turned.y - rest.y) < 0.05
    assert abs(bent.roll - rest.roll) > 0.1 or abs(bent.x - rest.x) > 0.5
