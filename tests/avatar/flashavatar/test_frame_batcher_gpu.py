"""Sessions' frames rendered together on CUDA (one deformation pass, one gsplat call on the batcher's stream)
give each session the picture its own frame graph gives, on the host and as device regions the session's
stream may use at once. Skipped without CUDA or gsplat."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bridge.core.face_params import FaceParams
from bridge.core.models import ModelCache
from tests.conftest import needs_golden
from tests.golden_files import FILES, golden_dir

GOLDEN = golden_dir("flashavatar")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    needs_golden("flashavatar", *FILES),
]
SESSIONS = 4
SIZE = 256


def _avatars(cache: ModelCache) -> list[Any]:
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    z = np.load(GOLDEN / "golden_seed0.npz")
    flame = GOLDEN / "flame_synthetic.npz"
    return [FlashAvatarAvatar(
        checkpoint=GOLDEN / "chkpnt_seed0.pth", flame_model=flame if flame.is_file() else GOLDEN / "flame_synthetic.pkl",
        flame_masks=GOLDEN / "FLAME_masks_synthetic.pkl", flame_mesh=GOLDEN / "FlameMesh.obj", eyelids_dir=GOLDEN,
        shape=z["shape"], width=SIZE, height=SIZE, device="cuda", renderer="gsplat", mlp_precision="fp32",
        transparent=True, models=cache, frame_batching=SESSIONS) for _ in range(SESSIONS)]


def _poses() -> list[FaceParams]:
    z = np.load(GOLDEN / "golden_seed0.npz")
    ps = [FaceParams.from_6d(z["expr"][i], z["jaw_pose"][i], z["eyes_pose"][i], z["eyelids"][i]) for i in range(4)]
    return [ps[0], ps[1].copy(head=np.array([0.1, 0.3, 0.0], np.float32)), ps[2],
            ps[3].copy(neck=np.array([0.2, 0.0, 0.1], np.float32))]


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _close(a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_batched_frames_on_cuda_match_each_frame_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gsplat")
    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path))
    avatars = _avatars(ModelCache())
    try:
        batcher = avatars[0].frame_batcher
        assert batcher is not None and batcher.batching and batcher.stream is not None
        poses = _poses()
        alone = [a.submit_alone(p).image() for a, p in zip(avatars, poses)]
        regions_alone = [(r.rgb.cpu().numpy(), r.alpha.cpu().numpy())
                         for r in (a.region_alone(p) for a, p in zip(avatars, poses))]
        for _ in range(2):
            got = _at_once([lambda a=a, p=p: a.render(p) for a, p in zip(avatars, poses)])
            for img, ref in zip(got, alone):
                assert img.alpha is not None and ref.alpha is not None
                _close(img.rgb, ref.rgb)
                _close(img.alpha, ref.alpha)

            def on_device(a: Any, p: FaceParams) -> tuple[np.ndarray, np.ndarray]:
                region = a.render_on_device(p)  # used on this thread's stream right away, as a scene does
                return region.rgb.cpu().numpy(), region.alpha.cpu().numpy()

            for (rgb, alpha), (ref_rgb, ref_alpha) in zip(
                    _at_once([lambda a=a, p=p: on_device(a, p) for a, p in zip(avatars, poses)]), regions_alone):
                _close(rgb, ref_rgb)
                _close(alpha, ref_alpha)
        assert batcher.frames_batched == 4 * SESSIONS
        assert all(r.size == SESSIONS for r in batcher.history)
    finally:
        for a in avatars:
            a.close()
