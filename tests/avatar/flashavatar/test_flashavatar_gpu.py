"""FlashAvatar on CUDA: the CUDA-graph path equals the eager path, the fp16 MLP stays within tolerance, and
gsplat agrees with the CPU renderer, batched rendering gives render()'s images, and the
whole-frame graph gives `rasterization()`'s images. Skipped without CUDA (and the gsplat parts without
gsplat)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bridge.core.face_params import FaceParams
from drivers.avatar.flashavatar.offline import render_batch
from tests.conftest import REPO, needs_golden
from tests.golden_files import FILES, golden_dir

GOLDEN = golden_dir("flashavatar")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    needs_golden("flashavatar", *FILES),
]


def _avatar(width: int, height: int, **extra: Any):  # type: ignore[no-untyped-def]
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    z = np.load(GOLDEN / "golden_seed0.npz")
    flame = GOLDEN / "flame_synthetic.npz"  # a converted copy where the pickle was too large to ship
    return FlashAvatarAvatar(
        checkpoint=GOLDEN / "chkpnt_seed0.pth", flame_model=flame if flame.is_file() else GOLDEN / "flame_synthetic.pkl",
        flame_masks=GOLDEN / "FLAME_masks_synthetic.pkl", flame_mesh=GOLDEN / "FlameMesh.obj", eyelids_dir=GOLDEN,
        shape=z["shape"], width=width, height=height, device="cuda", background=(0.0, 1.0, 0.0), **extra,
    )


def _params() -> list[FaceParams]:
    z = np.load(GOLDEN / "golden_seed0.npz")
    ps = [FaceParams.from_6d(z["expr"][i], z["jaw_pose"][i], z["eyes_pose"][i], z["eyelids"][i]) for i in range(4)]
    return [*ps, ps[2].copy(head=np.array([0.1, 0.3, 0.0], np.float32))]


def test_graph_matches_eager_and_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    graphed = _avatar(256, 256, mlp_precision="fp32", cuda_graph=True, renderer="cpu")
    eager = _avatar(256, 256, mlp_precision="fp32", cuda_graph=False, renderer="cpu")
    assert graphed.info()["cuda_graph"] is True
    z = np.load(GOLDEN / "golden_seed0.npz")
    for i, p in enumerate(_params()):
        g1, c1 = graphed.gaussians(p)
        g1m, c1v = g1.means.clone(), c1.viewmat.clone()
        g2, c2 = eager.gaussians(p)
        assert torch.allclose(g1m, g2.means, atol=1e-5)
        assert torch.allclose(c1v, c2.viewmat, atol=1e-6)
        if i < 4:
            assert float((g2.means.cpu() - torch.as_tensor(z["means"][i])).abs().max()) <= 1e-4


def test_fp16_mlp_within_tolerance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.avatar.flashavatar.avatar import FP16_TOLERANCE

    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    fast = _avatar(128, 128, mlp_precision="auto", renderer="cpu")
    ref = _avatar(128, 128, mlp_precision="fp32", cuda_graph=False, renderer="cpu")
    for p in _params():
        a = fast.gaussians(p)[0].means.clone()
        b = ref.gaussians(p)[0].means
        assert float((a - b).abs().max()) <= 2 * FP16_TOLERANCE


def test_gsplat_agrees_with_cpu_renderer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gsplat")
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from _avatar_common import renderer

    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    gs, cpu = renderer("gsplat", "cuda"), renderer("cpu", "cpu")
    av = _avatar(256, 256, mlp_precision="fp32", splat_renderer=gs)
    bg = torch.tensor([0.0, 1.0, 0.0])
    for p in _params()[:3]:
        g, cam = av.gaussians(p)
        a, _ = gs.render(g, cam, bg.cuda(), av.settings)
        cam_c = type(cam)(cam.viewmat.cpu(), cam.K.cpu(), cam.width, cam.height, cam.near, cam.far)
        b, _ = cpu.render(g.to("cpu"), cam_c, bg, av.settings)
        mse = float(((a.clamp(0, 1).cpu() - b.clamp(0, 1)) ** 2).mean())
        assert mse == 0 or 10 * math.log10(1 / mse) >= 40.0
    img = _avatar(1920, 1080, splat_renderer=gs).render(_params()[1])
    assert img.rgb.shape == (1080, 1920, 3) and img.rgb.dtype == np.uint8


def test_batched_equals_serial_with_gsplat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline rendering (one gsplat call per batch) gives render()'s images."""
    pytest.importorskip("gsplat")
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from _avatar_common import renderer

    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    av = _avatar(320, 240, mlp_precision="fp32", splat_renderer=renderer("gsplat", "cuda"), transparent=True)
    ps = _params()
    serial = [av.render(p) for p in ps]
    batched = render_batch(av, ps)
    base = av.base_camera.viewmat.cpu().numpy()
    views = np.stack([base] * len(ps))
    views[:, 0, 3] += np.linspace(-0.02, 0.02, len(ps), dtype=np.float32)  # a row of cameras
    multi = render_batch(av, ps, views=views)
    for img, ref in zip(batched, serial):
        diff = np.abs(img.rgb.astype(int) - ref.rgb.astype(int))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    for i, (img, p) in enumerate(zip(multi, ps)):
        av.set_view(views[i])
        diff = np.abs(img.rgb.astype(int) - av.render(p).rgb.astype(int))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    av.set_view(base)


def test_frame_graph_equals_rasterization(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One graph replay per frame gives the images of gsplat's `rasterization()`, its intersection list equals
    gsplat's own, and a frame that overflows the list is rendered again correctly after the list grows."""
    pytest.importorskip("gsplat")
    from gsplat.cuda._wrapper import fully_fused_projection, isect_offset_encode, isect_tiles

    from drivers.avatar.splat.frame_graph import TILE, intersect_fixed

    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    for w, h, transparent in ((512, 512, False), (320, 240, True)):
        graphed = _avatar(w, h, mlp_precision="fp32", renderer="gsplat", transparent=transparent)
        plain = _avatar(w, h, mlp_precision="fp32", renderer="gsplat", transparent=transparent, frame_graph=False)
        assert graphed.info()["frame_graph"] is not None and plain.info()["frame_graph"] is None
        for p in _params():
            a, b = graphed.render(p), plain.render(p)
            diff = np.abs(a.rgb.astype(int) - b.rgb.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
            if transparent:
                assert a.alpha is not None and b.alpha is not None
                assert np.abs(a.alpha.astype(int) - b.alpha.astype(int)).max() <= 1
        fg = graphed._frame_graph
        fg.capture(1000)  # far too small: the next frame must be rendered again with a grown list
        again = graphed.render(_params()[1])
        assert fg.regrown == 1 and fg.capacity > 1000
        assert np.abs(again.rgb.astype(int) - plain.render(_params()[1]).rgb.astype(int)).max() <= 1

    av = _avatar(512, 512, mlp_precision="fp32", renderer="gsplat", frame_graph=False)
    g, cam = av.gaussians(_params()[4])
    radii, means2d, depths, _, _ = fully_fused_projection(
        g.means, None, g.quats, g.scales, cam.viewmat[None], cam.K[None], 512, 512, eps2d=0.3,
        near_plane=cam.near, far_plane=cam.far, opacities=g.opacities.reshape(-1))
    tw = th = 512 // TILE
    _, isect_ids, flatten_ref = isect_tiles(means2d, radii, depths, TILE, tw, th, n_images=1)
    offsets_ref = isect_offset_encode(isect_ids, 1, tw, th)
    cap = flatten_ref.numel() + 5000
    offsets, flatten, count = intersect_fixed(means2d[0], radii[0], depths[0], tw, th,
                                              torch.arange(cap, device="cuda"), torch.arange(tw * th, device="cuda"))
    assert int(count) == flatten_ref.numel()
    assert torch.equal(flatten[cap - flatten_ref.numel():], flatten_ref)
    assert torch.equal(offsets - (cap - flatten_ref.numel()), offsets_ref[0])


def test_graphs_capture_while_the_face_driver_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the daemon the face driver replays its CUDA graphs on its own thread while the avatar captures (at
    start, and again when the frame graph grows): neither may break the other, and the images stay right."""
    pytest.importorskip("gsplat")
    import sys
    import threading

    sys.path.insert(0, str(REPO / "bench"))
    from bench_diffposetalk import small_args, speechlike

    from drivers.face.diffposetalk.model import DiffPoseTalkModel
    from drivers.face.diffposetalk.sampler import SamplerOptions, torch_noise
    from drivers.face.diffposetalk.streaming import StreamingEngine, StreamingOptions

    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    ps = _params()
    reference = [img.rgb for img in (_avatar(256, 256, mlp_precision="fp32", renderer="gsplat").render(p) for p in ps)]
    torch.manual_seed(0)
    model = DiffPoseTalkModel(small_args()).cuda().eval()
    audio = speechlike(2.0)
    stop = threading.Event()
    errors: list[BaseException] = []
    hops = [0]

    def face() -> None:
        try:
            while not stop.is_set():
                style = np.linspace(-1, 1, model.args.d_style).astype(np.float32)
                engine = StreamingEngine(model, np.zeros(100, np.float32), style,
                                         torch_noise(torch.Generator().manual_seed(1), model.device),
                                         SamplerOptions(kind="ddim", steps=4), StreamingOptions(3, 2))
                for start in range(0, audio.size, 640):
                    engine.feed(audio[start:start + 640])
                    while engine.ready():
                        assert torch.isfinite(engine.step()).all()
                        hops[0] += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=face, daemon=True)
    thread.start()
    try:
        while hops[0] < 3 and thread.is_alive():
            time.sleep(0.01)
        av = _avatar(256, 256, mlp_precision="fp32", renderer="gsplat")  # captures both graphs meanwhile
        for _ in range(3):
            av._frame_graph.capture(1000)  # and again, growing on the next frame
            for p, want in zip(ps, reference):
                assert np.abs(av.render(p).rgb.astype(int) - want.astype(int)).max() <= 1
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert hops[0] > 3
