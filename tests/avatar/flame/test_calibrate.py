"""`avatar-bridge calibrate` end to end on a synthetic FLAME (real file format) and synthetic tracked frames."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.cli import main
from bridge.controls.arkit_maps import load_for_avatar, load_map
from drivers.avatar.flame.arkit_fit import TARGETS, mirror
from drivers.avatar.flame.landmarks import LandmarkFileError, load_landmark_embedding
from tests.conftest import needs_golden
from tests.golden_files import golden_dir

FLAME_PKL = golden_dir("flashavatar") / "flame_synthetic.pkl"
pytestmark = needs_golden("flashavatar", FLAME_PKL.name)


def write_embedding(path: Path, n_faces: int, seed: int = 0) -> None:
    """The structure of FLAME's landmark_embedding.npy (as metrical-tracker / DECA ship it)."""
    rng = np.random.default_rng(seed)
    faces = rng.choice(n_faces, 68, replace=False).astype(np.int64)
    bary = rng.uniform(0.1, 1.0, (68, 3))
    bary /= bary.sum(axis=1, keepdims=True)
    emb = {
        "static_lmk_faces_idx": faces[17:].copy(),
        "static_lmk_bary_coords": bary[17:].copy(),
        "dynamic_lmk_faces_idx": torch.as_tensor(rng.choice(n_faces, (79, 17))),
        "dynamic_lmk_bary_coords": torch.as_tensor(rng.uniform(0, 1, (79, 17, 3))),
        "full_lmk_faces_idx": faces[None].copy(),
        "full_lmk_bary_coords": bary[None].copy(),
    }
    np.save(path, np.array(emb, dtype=object), allow_pickle=True)


def write_frames(folder: Path, n: int, dims: int = 30, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(100, dims)))[0]  # this person's expression subspace
    codes = (rng.normal(size=(n, dims)) * np.linspace(2.0, 0.3, dims)) @ basis.T
    folder.mkdir(parents=True)
    for i, e in enumerate(codes):
        frame = {
            "flame": {"exp": e[None].astype(np.float32), "shape": np.zeros((1, 300), np.float32),
                      "jaw": np.array([[1, 0, 0, 0, 1, 0]], np.float32), "eyes": np.tile([1, 0, 0, 0, 1, 0], 2)[None],
                      "eyelids": np.zeros((1, 2), np.float32)},
            "opencv": {"R": np.eye(3, dtype=np.float32)[None], "t": np.array([[0, 0, 1]], np.float32),
                       "K": np.array([[[1000, 0, 256], [0, 1000, 256], [0, 0, 1]]], np.float32)},
            "img_size": np.array([512, 512]), "frame_id": f"{i:05d}", "global_step": 0,
        }
        torch.save(frame, folder / f"{i:05d}.frame")
    return codes


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("flame")
    (d / "generic_model.pkl").symlink_to(FLAME_PKL)
    write_embedding(d / "landmark_embedding.npy", 9976)
    return d


def landmark_motion(flame_dir: Path, expression: np.ndarray) -> np.ndarray:
    """(68,3) landmark displacement of `expression` on the synthetic FLAME (shape zero, neutral pose)."""
    from drivers.avatar.flame.files import load_flame_arrays
    from drivers.avatar.flame.model import FlameModel

    emb = load_landmark_embedding(flame_dir / "landmark_embedding.npy")
    flame = FlameModel(load_flame_arrays(flame_dir / "generic_model.pkl", cache=False), dtype=torch.float64)
    faces = flame.faces.numpy()
    with torch.no_grad():
        e = torch.as_tensor(np.stack([np.zeros(100), expression]), dtype=torch.float64)
        v = flame(expression=e).numpy()
    lmk = emb.points(v, faces)
    return lmk[1] - lmk[0]


def test_calibrate_end_to_end(tmp_path: Path, flame_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "tracked" / "checkpoint", 60)
    presets = tmp_path / "presets"
    rc = main(["calibrate", "--tracked", str(tmp_path / "tracked"), "--flame", str(flame_dir / "generic_model.pkl"),
               "--presets", str(presets), "--avatar", "alice"])
    out = capsys.readouterr().out
    assert rc == 0, out
    path = presets / "calibrated" / "arkit_alice.toml"
    fitted = load_map(path)
    assert {"mouthSmileLeft", "mouthSmileRight", "browInnerUp", "cheekPuff"} <= set(fitted.deltas)
    for name in ("mouthSmileLeft", "mouthSmileRight", "browInnerUp", "browDownLeft"):
        expr = fitted.deltas[name][:100]
        motion = landmark_motion(flame_dir, expr)
        target = TARGETS[name]
        moved = np.linalg.norm(motion, axis=1)
        others = np.median([moved[i] for i in range(68) if i not in target])
        for point, direction in target.items():
            d = np.asarray(direction) / np.linalg.norm(direction)
            cos = float(motion[point] @ d / np.linalg.norm(motion[point]))
            assert cos > 0.8, (name, point, cos)
            assert moved[point] > 1.5 * others, (name, point, moved[point], others)
    # the overlay: the avatar's map now carries the fitted entry, exact channels stay generic
    amap = load_for_avatar("alice", presets)
    assert np.allclose(amap.delta("mouthSmileLeft"), fitted.deltas["mouthSmileLeft"])
    assert amap.delta("jawOpen")[100] != 0.0


def test_fitted_scale_stays_in_tracked_range(tmp_path: Path, flame_dir: Path) -> None:
    codes = write_frames(tmp_path / "t", 40, seed=3)
    assert main(["calibrate", "--tracked", str(tmp_path / "t"), "--flame", str(flame_dir / "generic_model.pkl"),
                 "--out", str(tmp_path / "m.toml")]) == 0
    expr = load_map(tmp_path / "m.toml").deltas["mouthSmileLeft"][:100]
    # weight 1.0 stays within the person's own expression magnitudes
    assert np.linalg.norm(expr) <= 1.5 * np.linalg.norm(codes, axis=1).max()


def test_mirror_swaps_sides() -> None:
    assert mirror({54: (0.6, 1.0, 0.0)}) == {48: (-0.6, 1.0, 0.0)}
    assert set(TARGETS["mouthSmileRight"]) == {48, 60}


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "is empty"),
    (lambda d: (d.mkdir(), (d / "a.jpg").write_bytes(b"x")), "no .frame files"),
    (lambda d: (d.mkdir(), (d / "00000.frame").write_bytes(b"garbage"), (d / "00001.frame").write_bytes(b"")),
     "none of the 2 .frame files"),
])
def test_clear_errors_for_bad_folders(tmp_path: Path, flame_dir: Path, capsys: pytest.CaptureFixture[str],
                                      setup: object, message: str) -> None:
    d = tmp_path / "tracked"
    setup(d)  # type: ignore[operator]
    rc = main(["calibrate", "--tracked", str(d), "--flame", str(flame_dir / "generic_model.pkl"),
               "--out", str(tmp_path / "x.toml")])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and "Traceback" not in err, err


def test_frame_files_with_objects_are_refused(tmp_path: Path, flame_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "tracked"
    d.mkdir()
    torch.save({"opencv": {"R": np.eye(3)}, "evil": Path("/")}, d / "00000.frame")
    rc = main(["calibrate", "--tracked", str(d), "--flame", str(flame_dir / "generic_model.pkl"),
               "--out", str(tmp_path / "x.toml")])
    assert rc != 0 and "none of the 1 .frame files" in capsys.readouterr().err


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("executed",))


def test_landmark_loader_errors(tmp_path: Path) -> None:
    hostile = tmp_path / "evil.npy"
    np.save(hostile, np.array({"static_lmk_faces_idx": _Boom()}, dtype=object), allow_pickle=True)
    with pytest.raises(LandmarkFileError, match="refusing"):
        load_landmark_embedding(hostile)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((68, 3)))
    with pytest.raises(LandmarkFileError, match="not a landmark embedding"):
        load_landmark_embedding(plain)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, lmk_face_idx=np.arange(10), lmk_b_coords=np.full((10, 3), 1 / 3))
    with pytest.raises(LandmarkFileError, match="iBUG"):
        load_landmark_embedding(wrong)
    with pytest.raises(LandmarkFileError, match="does not exist"):
        load_landmark_embedding(tmp_path / "missing.npy")
    static = tmp_path / "flame_static_embedding.pkl"
    with static.open("wb") as f:
        pickle.dump({"lmk_face_idx": np.arange(51), "lmk_b_coords": np.full((51, 3), 1 / 3)}, f, protocol=2)
    emb = load_landmark_embedding(static)
    assert emb.count == 51 and emb.row(54) == 37 and emb.row(3) is None
    bad_faces = load_landmark_embedding(static)
    with pytest.raises(LandmarkFileError, match="triangles"):
        bad_faces.check_faces(20)


def test_missing_flame_and_landmarks_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_frames(tmp_path / "t", 3)
    assert main(["calibrate", "--tracked", str(tmp_path / "t")]) != 0
    assert "--flame" in capsys.readouterr().err
    lonely = tmp_path / "flame"
    lonely.mkdir()
    (lonely / "generic_model.pkl").symlink_to(FLAME_PKL)
    assert main(["calibrate", "--tracked", str(tmp_path / "t"), "--flame", str(lonely / "generic_model.pkl")]) != 0
    assert "--landmarks" in capsys.readouterr().err
