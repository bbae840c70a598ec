"""Sessions sharing a FlashAvatar model render their frames together once enough of them share it: the
frames that fall due together come back as each session would have rendered them alone (golden avatar, CPU
renderer, small size), on the host and as device regions; below the threshold each renders alone; a bad frame
fails only its own session."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from bridge.core.face_params import FaceParams
from bridge.core.models import ModelCache
from tests.conftest import needs_golden
from tests.golden_files import FILES, golden_dir

GOLDEN = golden_dir("flashavatar")
pytestmark = needs_golden("flashavatar", *FILES)
W, H = 40, 32
SESSIONS = 3


def _make(cache: ModelCache, batched_from: int) -> Any:
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    z = np.load(GOLDEN / "golden_seed0.npz")
    return FlashAvatarAvatar(
        checkpoint=GOLDEN / "chkpnt_seed0.pth", flame_model=GOLDEN / "flame_synthetic.pkl",
        flame_masks=GOLDEN / "FLAME_masks_synthetic.pkl", flame_mesh=GOLDEN / "FlameMesh.obj", eyelids_dir=GOLDEN,
        shape=z["shape"], width=W, height=H, renderer="cpu", device="cpu", background=(0.0, 1.0, 0.0),
        transparent=True, models=cache, frame_batching=batched_from,
    )


@pytest.fixture
def avatars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    os.environ.setdefault("AVATAR_BRIDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    cache = ModelCache()
    group = [_make(cache, batched_from=SESSIONS) for _ in range(SESSIONS)]
    yield group
    for a in group:
        a.close()


def _poses() -> list[FaceParams]:
    z = np.load(GOLDEN / "golden_seed0.npz")
    ps = [FaceParams.from_6d(z["expr"][i], z["jaw_pose"][i], z["eyes_pose"][i], z["eyelids"][i]) for i in range(3)]
    return [ps[0], ps[1].copy(head=np.array([0.1, 0.4, 0.0], np.float32)),
            ps[2].copy(neck=np.array([0.2, 0.0, 0.1], np.float32), translation=np.array([0, 0.01, 0], np.float32))]


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """A batched deformation sums in another order: one level on a few pixels at most."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on threads of their own, released together (as sessions' render threads)."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return results


def test_frames_due_together_render_as_one_batch_and_match_alone(avatars: list[Any]) -> None:
    batcher = avatars[0]._batcher
    assert batcher is not None and all(a._batcher is batcher for a in avatars) and batcher.batching
    poses = _poses()
    alone = [a.submit_alone(p).image() for a, p in zip(avatars, poses)]
    for _ in range(3):
        got = _at_once([lambda a=a, p=p: a.render(p) for a, p in zip(avatars, poses)])
        for img, ref in zip(got, alone):
            assert img.rgb.shape == (H, W, 3) and img.alpha is not None and ref.alpha is not None
            _close(img.rgb, ref.rgb)
            _close(img.alpha, ref.alpha)
    assert [r.size for r in batcher.history] == [SESSIONS] * 3  # each closed when every member had a frame in
    assert batcher.frames_batched == 3 * SESSIONS
    assert max(r.waited for r in batcher.history) < batcher.window_s + 5.0  # never held past its window long


def test_device_regions_come_from_the_batch(avatars: list[Any]) -> None:
    poses = _poses()
    alone = [a.region_alone(p) for a, p in zip(avatars, poses)]
    alone_host = [(r.rgb.clone().numpy(), r.alpha.clone().numpy()) for r in alone]
    got = _at_once([lambda a=a, p=p: a.render_on_device(p) for a, p in zip(avatars, poses)])
    for region, (rgb, alpha), a in zip(got, alone_host, avatars):
        _close(region.rgb.numpy(), rgb)
        _close(region.alpha.numpy(), alpha)
        assert region.origin == a.origin
    assert avatars[0]._batcher.history[-1].size == SESSIONS


def test_below_the_threshold_each_renders_alone(avatars: list[Any]) -> None:
    batcher = avatars[0]._batcher
    avatars[2].close()
    assert batcher.members == SESSIONS - 1 and not batcher.batching
    before = len(batcher.history)
    got = _at_once([lambda a=a, p=p: a.render(p) for a, p in zip(avatars[:2], _poses())])
    assert len(got) == 2 and len(batcher.history) == before  # rendered on the callers' threads


def test_a_bad_frame_fails_its_own_session_only(avatars: list[Any]) -> None:
    poses = _poses()
    bad = poses[0].copy()
    bad.expression = np.zeros(7, np.float32)  # changed after FaceParams checked it
    calls: list[Callable[[], Any]] = [lambda: avatars[0].render(bad)]
    calls += [lambda a=a, p=p: a.render(p) for a, p in zip(avatars[1:], poses[1:])]
    with pytest.raises(ValueError, match="wrong length"):
        _at_once(calls)
    fine = _at_once([lambda a=a, p=p: a.render(p) for a, p in zip(avatars, poses)])
    assert all(img.rgb.shape == (H, W, 3) for img in fine)
