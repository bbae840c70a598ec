"""Avatars of one checkpoint in one process share its model: FLAME and the FlashAvatar weights are loaded once,
and each further avatar adds only its own buffers (within the 100 MiB a session may cost beyond the first)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bridge.core.config import load_config
from bridge.core.face_params import FaceParams
from bridge.core.models import ModelCache
from drivers.memory import tensor_bytes
from tests.golden_files import require

PER_SESSION_BOUND = 100 * 2**20
SIZE = 512  # the product's frame size: the render buffers a session adds are the size of its frames


def _config(tmp: Path, size: int) -> object:
    ckpt, flame, masks, mesh, golden = require("flashavatar", "chkpnt_seed0.pth", "flame_synthetic.pkl",
                                              "FLAME_masks_synthetic.pkl", "FlameMesh.obj", "golden_seed0.npz")
    shape = tmp / "shape.npy"
    np.save(shape, np.load(golden)["shape"])
    return load_config(None, environ={}, overrides={
        "video": {"width": size, "height": size},
        "avatar": {"kind": "flashavatar", "device": "cpu", "renderer": "cpu", "checkpoint": str(ckpt),
                   "flame_model": str(flame), "flame_masks": str(masks), "flame_mesh": str(mesh),
                   "eyelids_dir": str(ckpt.parent), "shape": str(shape)}})


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    tmp = tmp_path_factory.mktemp("shared")
    os.environ["AVATAR_BRIDGE_CACHE"] = str(tmp / "cache")
    cache = ModelCache()
    config = _config(tmp, SIZE)
    first = FlashAvatarAvatar.from_config(config, models=cache)  # type: ignore[arg-type]
    second = FlashAvatarAvatar.from_config(config, models=cache)  # type: ignore[arg-type]
    return cache, first, second


def test_two_avatars_share_one_model_loaded_once(pair) -> None:  # type: ignore[no-untyped-def]
    cache, first, second = pair
    assert second.model is first.model
    assert second.model.flame is first.model.flame
    assert cache.loads == 3  # the FLAME files, the checkpoint and the model's frame batcher, once each
    assert second._host_in[0].data_ptr() != first._host_in[0].data_ptr()  # per-avatar buffers stay apart


def test_a_further_avatar_costs_its_buffers_only(pair) -> None:  # type: ignore[no-untyped-def]
    _, first, second = pair
    own = tensor_bytes(second, shared=[first.model])
    whole = tensor_bytes(second)
    frame = SIZE * SIZE * 3
    assert frame <= own <= PER_SESSION_BOUND, f"{own / 2**20:.1f} MiB per further avatar"
    assert whole - own >= 1 * 2**20  # the weights and per-subject tensors it shares are real and left out


def test_avatars_sharing_a_model_render_alike(tmp_path: Path) -> None:
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    cache = ModelCache()
    config = _config(tmp_path, 64)
    a = FlashAvatarAvatar.from_config(config, models=cache)  # type: ignore[arg-type]
    b = FlashAvatarAvatar.from_config(config, models=cache)  # type: ignore[arg-type]
    alone = FlashAvatarAvatar.from_config(config, models=ModelCache())  # type: ignore[arg-type]
    open_jaw = FaceParams.neutral().copy(jaw=np.array([0.3, 0, 0], np.float32))
    assert a.model is b.model and alone.model is not a.model
    b.render(FaceParams.neutral())  # one avatar's frame does not disturb the other's
    assert np.array_equal(a.render(open_jaw).rgb, alone.render(open_jaw).rgb)
