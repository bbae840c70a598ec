"""FLAME landmark embeddings: which mesh triangle and barycentric point each facial landmark sits on.

Three file forms are read, all in the iBUG 68-point order (or its 51 inner points, 17..67):
- `landmark_embedding.npy` as shipped with metrical-tracker, DECA and FlashAvatar: `np.save` of a dict with
  `static_lmk_faces_idx` (51,), `static_lmk_bary_coords` (51,3), `full_lmk_faces_idx` (1,68),
  `full_lmk_bary_coords` (1,68,3) and the yaw-dependent contour tables `dynamic_lmk_*` (stored as torch
  tensors; not needed here, since calibration evaluates the face frontally);
- FLAME's `flame_static_embedding.pkl`: `lmk_face_idx` (51,), `lmk_b_coords` (51,3);
- an `.npz` with either set of keys.
The pickled forms are read through the restricted unpickler of `drivers.safe_load`: arrays only, and torch tensors become inert
placeholders, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from drivers.avatar.flame.files import FlameFileError
from drivers.safe_load import (
    BROKEN_PICKLE_ERRORS,
    Opaque,
    SafeLoadError,
    check_numpy_file,
    to_arrays,
    unpickle,
)

EMBEDDING_NAMES = ("landmark_embedding.npy", "landmark_embedding.npz", "flame_static_embedding.pkl")
STATIC_OFFSET = 17  # the 51 static landmarks are iBUG points 17..67


class LandmarkFileError(FlameFileError):
    """A landmark embedding file is missing, unsafe or not one of the known layouts."""


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Landmarks as (triangle, barycentric) pairs; `first` is the iBUG index of row 0 (0 or 17)."""

    face_idx: NDArray[np.int64]  # (L,)
    bary: NDArray[np.float64]  # (L,3)
    first: int
    source: str

    @property
    def count(self) -> int:
        return int(self.face_idx.shape[0])

    def row(self, ibug: int) -> int | None:
        """Row of iBUG-68 point `ibug`, or None when this embedding lacks it (e.g. contour in a 51-point one)."""
        r = ibug - self.first
        return r if 0 <= r < self.count else None

    def check_faces(self, n_faces: int) -> None:
        if self.face_idx.size and (self.face_idx.min() < 0 or self.face_idx.max() >= n_faces):
            raise LandmarkFileError(f"{self.source}: triangle indices reach {int(self.face_idx.max())} but the "
                                    f"FLAME mesh has {n_faces} triangles; use the embedding made for this FLAME")

    def points(self, vertices: NDArray[Any], faces: NDArray[Any]) -> NDArray[np.float64]:
        """(..., V, 3) vertices → (..., L, 3) landmark positions."""
        tri = np.asarray(faces, dtype=np.int64)[self.face_idx]  # (L,3)
        v = np.asarray(vertices, dtype=np.float64)
        return np.einsum("...lkc,lk->...lc", v[..., tri, :], self.bary)


def _unpickle(stream: io.BytesIO, path: Path, problem: str, fix: str) -> Any:
    """Unpickle through the restricted unpickler; any failure becomes a `LandmarkFileError` naming the file."""
    try:
        return unpickle(stream, torch_placeholders=True)
    except SafeLoadError as exc:
        raise LandmarkFileError(f"{path}: {exc}") from None
    except BROKEN_PICKLE_ERRORS as exc:
        raise LandmarkFileError(f"{path} {problem} ({type(exc).__name__}: {exc}); {fix}") from None


def _read_npy_object(raw: bytes, path: Path) -> Any:
    """The pickled payload of an object-dtype .npy, through the restricted unpickler."""
    fmt = np.lib.format
    buf = io.BytesIO(raw)
    try:
        version = fmt.read_magic(buf)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(buf)
        else:
            shape, _fortran, dtype = fmt.read_array_header_2_0(buf)
    except ValueError as exc:
        raise LandmarkFileError(f"{path} is not a NumPy .npy file ({exc})") from None
    if not dtype.hasobject:
        raise LandmarkFileError(f"{path} holds a plain {dtype} array of shape {shape}, not a landmark embedding "
                                "dict; use FLAME's landmark_embedding.npy")
    obj = _unpickle(buf, path, "is truncated or damaged", "download it again")
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.size == 1:
        obj = obj.reshape(-1)[0]
    return obj


def _plain(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise LandmarkFileError(f"{path} holds a {type(obj).__name__}, not a landmark embedding dict")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, Opaque):
            continue  # torch tensors (the dynamic contour tables): not used
        try:
            out[str(k)] = to_arrays(v, str(k))
        except SafeLoadError as exc:
            raise LandmarkFileError(f"{path}: {exc}") from None
    return out


def _read(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if not raw:
        raise LandmarkFileError(f"landmark embedding {path} is empty; download it again")
    if raw[:6] == b"\x93NUMPY":
        return _plain(_read_npy_object(raw, path), path)
    if raw[:2] == b"PK":
        try:
            check_numpy_file(raw)
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError) as exc:
            raise LandmarkFileError(f"{path} is a damaged or pickled .npz ({exc}); save it with plain arrays") from None
    obj = _unpickle(io.BytesIO(raw), path, "is neither .npy, .npz nor a pickle",
                    "point --landmarks at FLAME's landmark_embedding.npy")
    return _plain(obj, path)


def _pair(data: dict[str, Any], faces_key: str, bary_key: str) -> tuple[NDArray[Any], NDArray[Any]] | None:
    if faces_key not in data or bary_key not in data:
        return None
    return np.asarray(data[faces_key]), np.asarray(data[bary_key])


def load_landmark_embedding(path: Path | str) -> LandmarkEmbedding:
    """Read and check an embedding; prefers the full 68-point table, else the 51 static points."""
    p = Path(path)
    if not p.is_file():
        raise LandmarkFileError(f"landmark embedding {p} does not exist; pass FLAME's landmark_embedding.npy "
                                "(shipped with metrical-tracker / FlashAvatar in flame/) with --landmarks")
    data = _read(p)
    if "landmark_indices" in data:
        raise LandmarkFileError(f"{p} is a MediaPipe embedding; calibration needs the iBUG-68 one "
                                "(landmark_embedding.npy)")
    for faces_key, bary_key in (("full_lmk_faces_idx", "full_lmk_bary_coords"),
                                ("static_lmk_faces_idx", "static_lmk_bary_coords"),
                                ("lmk_face_idx", "lmk_b_coords")):
        pair = _pair(data, faces_key, bary_key)
        if pair is not None:
            break
    else:
        raise LandmarkFileError(f"{p} has none of the landmark tables (full_lmk_*, static_lmk_*, lmk_face_idx/"
                                f"lmk_b_coords); keys found: {sorted(data)[:12]}")
    faces, bary = pair
    if not np.issubdtype(faces.dtype, np.integer) and not (
            np.issubdtype(faces.dtype, np.floating) and np.all(np.mod(faces, 1) == 0)):
        raise LandmarkFileError(f"{p}: {faces_key} must hold triangle indices (integers), got {faces.dtype}")
    faces = faces.reshape(-1).astype(np.int64)
    bary = np.asarray(bary, dtype=np.float64).reshape(-1, 3) if bary.size % 3 == 0 else bary
    if bary.ndim != 2 or bary.shape != (faces.shape[0], 3):
        raise LandmarkFileError(f"{p}: {bary_key} has shape {np.shape(bary)}, expected ({faces.shape[0]}, 3)")
    if faces.shape[0] not in (51, 68):
        raise LandmarkFileError(f"{p}: {faces.shape[0]} landmarks; expected the iBUG layout (68, or its 51 "
                                "inner points)")
    if not np.all(np.isfinite(bary)) or np.any(np.abs(bary.sum(axis=1) - 1.0) > 1e-2):
        raise LandmarkFileError(f"{p}: {bary_key} are not barycentric coordinates (rows must sum to 1)")
    return LandmarkEmbedding(faces, bary, 0 if faces.shape[0] == 68 else STATIC_OFFSET, str(p))


def find_embedding(near: list[Path]) -> Path | None:
    """The first known embedding file in `near` folders (e.g. beside the FLAME model)."""
    for d in near:
        for n in EMBEDDING_NAMES:
            if (d / n).is_file():
                return d / n
    return None
