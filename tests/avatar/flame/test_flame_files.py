"""Loading FLAME files: the real pickle layout (chumpy, scipy sparse, NumPy 1.x paths) without chumpy, and
clear refusals for malicious, truncated and foreign files."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.core.rotations_torch import axis_angle_to_matrix, rotation_6d_to_matrix
from drivers.avatar.flame.files import FlameFileError, load_flame_arrays, load_masks, safe_load_pickle
from drivers.avatar.flame.model import FlameModel, to_matrix

V = 5023


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path / "cache"))


class _Ch:
    """Pickles like chumpy's Ch: a NEWOBJ of chumpy.ch.Ch with the array in its state dict."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_Ch, (), {"x": self.x, "_dirty_vars": set()})


class _Csc:
    def __init__(self, dense: np.ndarray) -> None:
        cols = [np.nonzero(dense[:, j])[0] for j in range(dense.shape[1])]
        self.state = {
            "_shape": dense.shape,
            "indices": np.concatenate(cols).astype(np.int32),
            "indptr": np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32),
            "data": np.concatenate([dense[c, j] for j, c in enumerate(cols)]),
            "maxprint": 50,
        }

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_Csc, (), self.state)


@pytest.fixture
def fake_modules() -> Iterator[None]:
    """Let pickle name our writers as chumpy.ch.Ch and scipy.sparse.csc.csc_matrix (the old module path)."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    ch = types.ModuleType("chumpy.ch")
    ch.Ch = _Ch  # type: ignore[attr-defined]
    csc = types.ModuleType("scipy.sparse.csc")
    csc.csc_matrix = _Csc  # type: ignore[attr-defined]
    _Ch.__module__, _Ch.__qualname__ = "chumpy.ch", "Ch"
    _Csc.__module__, _Csc.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    sys.modules.update({"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch, "scipy.sparse.csc": csc})
    yield
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


def _flame_dict(rng: np.random.Generator, n_vertices: int = V) -> dict[str, object]:
    jreg = np.zeros((5, n_vertices))
    for j in range(5):
        jreg[j, rng.choice(n_vertices, 8, replace=False)] = 1.0 / 8
    weights = rng.random((n_vertices, 5))
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "f": rng.integers(0, n_vertices, (20, 3)).astype(np.uint32),
        "v_template": rng.normal(size=(n_vertices, 3)) * 0.1,
        "shapedirs": _Ch(rng.normal(size=(n_vertices, 3, 400)).astype(np.float32) * 1e-3),
        "posedirs": rng.normal(size=(n_vertices, 3, 36)) * 1e-3,
        "J_regressor": _Csc(jreg),
        "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": kintree,
        "J": rng.normal(size=(5, 3)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def test_loads_flame2020_layout_without_chumpy(tmp_path: Path, fake_modules: None) -> None:
    rng = np.random.default_rng(0)
    src = _flame_dict(rng)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(src, protocol=2))
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"scipy.sparse.csc" in raw
    for attempt in range(2):  # the second read comes from the .npz cache
        data = load_flame_arrays(path)
        assert data["shapedirs"].shape == (V, 3, 400)
        np.testing.assert_allclose(data["shapedirs"], src["shapedirs"].x, rtol=0, atol=0)  # type: ignore[attr-defined]
        np.testing.assert_allclose(data["J_regressor"].sum(1), np.ones(5))
        assert data["f"].dtype == np.int64, attempt
    assert len(list((tmp_path / "cache" / "flame").glob("*.npz"))) == 1


def test_refuses_malicious_global(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"shapedirs": Evil()}, protocol=2))
    with pytest.raises(FlameFileError, match=r"refusing to load.*system"):
        load_flame_arrays(path)
    assert not marker.exists()


def test_truncated_and_empty_and_missing(tmp_path: Path, fake_modules: None) -> None:
    good = pickle.dumps(_flame_dict(np.random.default_rng(1)), protocol=2)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(good[: len(good) // 3])
    with pytest.raises(FlameFileError, match="truncated or not a pickle"):
        load_flame_arrays(trunc)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(FlameFileError, match="empty"):
        load_flame_arrays(empty)
    with pytest.raises(FlameFileError, match="does not exist"):
        load_flame_arrays(tmp_path / "nope.pkl")


def test_foreign_pickles_are_named(tmp_path: Path) -> None:
    not_flame = tmp_path / "other.pkl"
    not_flame.write_bytes(pickle.dumps({"v_template": np.zeros((V, 3))}, protocol=2))
    with pytest.raises(FlameFileError, match="this is not a FLAME model: missing shapedirs"):
        load_flame_arrays(not_flame)
    body = pickle.dumps({k: (v.x if isinstance(v, _Ch) else v) for k, v in _flame_dict(
        np.random.default_rng(2), n_vertices=6890).items() if k != "J_regressor"} | {"J_regressor": np.zeros((5, 6890))})
    smpl = tmp_path / "smpl.pkl"
    smpl.write_bytes(body)
    with pytest.raises(FlameFileError, match="expected 5023 vertices"):
        load_flame_arrays(smpl)
    listing = tmp_path / "list.pkl"
    listing.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(FlameFileError, match="not a FLAME model"):
        load_flame_arrays(listing)
    torch_file = tmp_path / "model.pkl"
    torch.save({"a": torch.zeros(2)}, torch_file)
    with pytest.raises(FlameFileError, match="zip/torch archive"):
        load_flame_arrays(torch_file)


def test_masks_file(tmp_path: Path) -> None:
    p = tmp_path / "FLAME_masks.pkl"
    p.write_bytes(pickle.dumps({"boundary": np.arange(10), "face": np.arange(5)}, protocol=2))
    assert load_masks(p)["boundary"].tolist() == list(range(10))
    q = tmp_path / "bad.pkl"
    q.write_bytes(pickle.dumps({"face": np.arange(5)}, protocol=2))
    with pytest.raises(FlameFileError, match="missing 'boundary'"):
        load_masks(q)
    assert safe_load_pickle(p)["face"].shape == (5,)


def test_rotation_forms_agree() -> None:
    aa = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0], [1e-9, 0.0, 0.0]])
    mats = axis_angle_to_matrix(aa)
    assert torch.allclose(mats @ mats.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6)
    six = mats[:, :2, :].reshape(3, 6)
    assert torch.allclose(rotation_6d_to_matrix(six), mats, atol=1e-6)
    assert torch.allclose(to_matrix(aa.reshape(1, 9), 3)[0], to_matrix(six.reshape(1, 18), 3)[0], atol=1e-6)
    with pytest.raises(ValueError, match="axis-angle"):
        to_matrix(torch.zeros(1, 5), 1)


def test_lbs_axis_angle_equals_6d_and_global_rotation_is_rigid(tmp_path: Path, fake_modules: None) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(_flame_dict(rng), protocol=2))
    flame = FlameModel(load_flame_arrays(path))
    expr = torch.as_tensor(rng.normal(size=(1, 100)), dtype=torch.float32)
    jaw = torch.tensor([[0.2, 0.0, 0.0]])
    jaw6 = axis_angle_to_matrix(jaw)[:, :2, :].reshape(1, 6)
    a = flame(expression=expr, jaw=jaw)
    b = flame(expression=expr, jaw=jaw6)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, flame(expression=expr), atol=1e-4)  # the jaw does move vertices
    # Global rotation moves every vertex rigidly about the root joint.
    rot = torch.tensor([[0.0, 0.4, 0.1]])
    c = flame(expression=expr, jaw=jaw, rotation=rot)
    r = axis_angle_to_matrix(rot)[0]
    root = flame._j_template[0] + torch.einsum("l,kl->k", torch.cat([torch.zeros(300), expr[0]]), flame._j_dirs[0])
    want = (a[0] - root) @ r.T + root
    assert torch.allclose(c[0], want, atol=1e-5)
    t = flame(expression=expr, translation=torch.tensor([[0.0, 0.1, 0.0]]))
    assert torch.allclose(t - flame(expression=expr), torch.tensor([0.0, 0.1, 0.0]).expand(1, V, 3), atol=1e-6)


def test_head_motion_matches_flame_global_rotation(tmp_path: Path, fake_modules: None) -> None:
    """The camera-side head motion the avatar uses equals FLAME's own global rotation of the mesh."""
    from drivers.avatar.flame.model import head_motion

    rng = np.random.default_rng(4)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(_flame_dict(rng), protocol=2))
    flame = FlameModel(load_flame_arrays(path))
    rot = np.array([0.1, -0.5, 0.2])
    joints = flame._j_template.numpy().astype(np.float64)
    moved = flame(rotation=torch.tensor(rot, dtype=torch.float32)[None])[0].numpy()
    m = head_motion(rot, np.zeros(3), np.array([0.0, 0.0, 0.05]), joints)
    still = flame()[0].numpy().astype(np.float64)
    np.testing.assert_allclose(still @ m[:3, :3].T + m[:3, 3], moved + np.array([0.0, 0.0, 0.05]), atol=1e-5)


def test_head_motion_is_the_composition_of_rotations_about_the_joints() -> None:
    """Batched head motion (what the avatar's graphs run) equals rotate-about-joint 1 (neck), then about joint 0
    (head), then translate, built here from 4x4 matrices with the independent NumPy Rodrigues."""
    from bridge.core.rotations import axis_angle_to_matrix as np_axis_angle_to_matrix
    from drivers.avatar.flame.model import head_motion, head_motion_batch

    def about(aa: np.ndarray, p: np.ndarray) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = np_axis_angle_to_matrix(aa)
        m[:3, 3] = p - m[:3, :3] @ p
        return m

    rng = np.random.default_rng(5)
    joints = rng.normal(size=(5, 3)) * 0.05
    head, neck, trans = (rng.normal(size=(4, 3)) * s for s in (0.4, 0.3, 0.02))
    head[0] = 0.0  # the identity and tiny angles take the first-order branch
    neck[1] = 1e-10
    h, n, tr, j = (torch.tensor(x, dtype=torch.float64) for x in (head, neck, trans, joints))
    got = head_motion_batch(axis_angle_to_matrix(h), axis_angle_to_matrix(n), tr, j)
    want = np.stack([about(head[i], joints[0]) @ about(neck[i], joints[1]) for i in range(4)])
    want[:, :3, 3] += trans
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    np.testing.assert_allclose(head_motion(head[2], neck[2], trans[2], joints), want[2], atol=1e-12)
