"""FLAME's file formats: the model, its masks and eyelid blendshapes, read safely and cached as plain `.npz`.

FLAME 2020's `generic_model.pkl` is a Python-2 era pickle: `shapedirs` is a chumpy `Ch`, `J_regressor` a
scipy sparse matrix, arrays reference `numpy.core.multiarray`. Unpickling it normally needs chumpy (abandoned,
broken on current NumPy) and would run whatever globals the file names. `drivers.safe_load` instead maps
exactly those few globals to inert stand-ins that are turned into plain NumPy arrays, and refuses every other
global with a clear error, so a malicious or foreign file cannot execute code.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError
from drivers.safe_load import RefusedContent, SafeLoadError, check_numpy_file, load_pickle

N_VERTICES = 5023
N_JOINTS = 5
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
CACHE_VERSION = 1


class FlameFileError(UserError, ValueError):
    """A FLAME-related file is missing, truncated, foreign or unsafe; the message says which and what to do."""


def safe_load_pickle(path: Path | str, what: str = "FLAME file") -> Any:
    """A FLAME-era pickle (chumpy arrays, scipy sparse matrices) as plain arrays, through `drivers.safe_load`."""
    try:
        return load_pickle(path, what)
    except RefusedContent as exc:
        raise FlameFileError(f"{exc}; use the generic_model.pkl / flame2023.pkl from the FLAME website") from None
    except SafeLoadError as exc:
        raise FlameFileError(str(exc)) from None


def validate_flame(data: Mapping[str, Any], source: str) -> dict[str, NDArray[Any]]:
    """Check keys and shapes of a FLAME model; return float arrays ready for `FlameModel`."""
    if not isinstance(data, Mapping):
        raise FlameFileError(f"this is not a FLAME model: {source} holds a {type(data).__name__}, not a dict")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise FlameFileError(f"this is not a FLAME model: missing {key} in {source}")
    out: dict[str, NDArray[Any]] = {}
    try:
        out["v_template"] = np.asarray(data["v_template"], dtype=np.float64)
        out["shapedirs"] = np.asarray(data["shapedirs"], dtype=np.float64)
        out["posedirs"] = np.asarray(data["posedirs"], dtype=np.float64)
        out["J_regressor"] = np.asarray(data["J_regressor"], dtype=np.float64)
        out["weights"] = np.asarray(data["weights"], dtype=np.float64)
        out["kintree_table"] = np.asarray(data["kintree_table"], dtype=np.int64)
        out["f"] = np.asarray(data["f"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise FlameFileError(f"this is not a FLAME model: non-numeric data in {source} ({exc})") from None
    v = out["v_template"]
    if v.ndim != 2 or v.shape[1] != 3:
        raise FlameFileError(f"v_template in {source} has shape {v.shape}; expected ({N_VERTICES}, 3)")
    if v.shape[0] != N_VERTICES:
        raise FlameFileError(f"expected {N_VERTICES} vertices, {source} has {v.shape[0]}: not a FLAME head model")
    checks = {
        "shapedirs": (N_VERTICES, 3, None),
        "posedirs": (N_VERTICES, 3, (N_JOINTS - 1) * 9),
        "J_regressor": (N_JOINTS, N_VERTICES),
        "weights": (N_VERTICES, N_JOINTS),
        "kintree_table": (2, N_JOINTS),
    }
    for key, want in checks.items():
        got = out[key].shape
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            shown = tuple("K" if w is None else w for w in want)
            raise FlameFileError(f"{key} in {source} has shape {got}; expected {shown} for FLAME")
    if out["shapedirs"].shape[2] < 400:
        raise FlameFileError(
            f"shapedirs in {source} has {out['shapedirs'].shape[2]} components; FLAME 2020/2023 have 400 "
            "(300 shape + 100 expression)"
        )
    if out["f"].ndim != 2 or out["f"].shape[1] != 3:
        raise FlameFileError(f"f in {source} has shape {out['f'].shape}; expected (F, 3) triangles")
    for key, arr in out.items():
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise FlameFileError(f"{key} in {source} contains NaN or infinite values; the file is damaged")
    return out


def _cache_dir() -> Path:
    env = os.environ.get("AVATAR_BRIDGE_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avatar-bridge"
    return base / "flame"


def _cache_key(path: Path) -> str:
    st = path.stat()
    ident = f"{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def load_flame_arrays(path: Path | str, cache: bool = True) -> dict[str, NDArray[Any]]:
    """Load and validate a FLAME model (`.pkl` or our `.npz`), converting a pickle once to an `.npz` cache.

    The cache lives in `$AVATAR_BRIDGE_CACHE/flame` (default `~/.cache/avatar-bridge/flame`), keyed by the
    source's path, size and modification time; it is read with `allow_pickle=False`.
    """
    path = Path(path)
    if not path.is_file():
        raise FlameFileError(
            f"FLAME model {path} does not exist; download FLAME 2020 (generic_model.pkl) from "
            "https://flame.is.tue.mpg.de and set avatar.flame_model"
        )
    if path.suffix == ".npz":
        return validate_flame(_load_npz(path), str(path))
    cached: Path | None = None
    if cache:
        cached = _cache_dir() / f"{path.stem}-{_cache_key(path)}.npz"
        if cached.is_file():
            try:
                return validate_flame(_load_npz(cached), str(cached))
            except FlameFileError:
                cached.unlink(missing_ok=True)
    data = validate_flame(safe_load_pickle(path, "FLAME model"), str(path))
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.savez(fh, **data)  # type: ignore[arg-type]
            tmp.replace(cached)
        except OSError:
            pass  # a read-only cache only costs speed
    return data


def _load_npz(path: Path) -> dict[str, NDArray[Any]]:
    try:
        check_numpy_file(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FlameFileError(f"{path} is not a readable .npz ({exc}); delete it and try again") from None


def load_masks(path: Path | str) -> dict[str, NDArray[Any]]:
    """FLAME_masks.pkl: a dict of vertex-id arrays; FlashAvatar needs 'boundary'."""
    data = safe_load_pickle(path, "FLAME masks file")
    if not isinstance(data, dict) or "boundary" not in data:
        raise FlameFileError(f"{path} is not FLAME_masks.pkl: missing 'boundary'; use FLAME_masks.pkl from FLAME")
    out = {}
    for k, v in data.items():
        arr = np.asarray(v)
        if arr.dtype.kind in "iu":
            out[k] = arr.astype(np.int64).reshape(-1)
    b = out.get("boundary")
    if b is None or (b.size and (b.min() < 0 or b.max() >= N_VERTICES)):
        raise FlameFileError(f"'boundary' in {path} is not a list of vertex ids in [0, {N_VERTICES})")
    return out


def load_eyelids(folder: Path | str | None, left: Path | str | None = None,
                 right: Path | str | None = None) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The eyelid blendshapes (5023,3) each, from `l_eyelid.npy` and `r_eyelid.npy`."""
    result = []
    for name, explicit in (("l_eyelid.npy", left), ("r_eyelid.npy", right)):
        p = Path(explicit) if explicit is not None else Path(folder or ".") / name
        if not p.is_file():
            raise FlameFileError(f"eyelid blendshape {p} does not exist; set avatar.eyelids_dir to the folder "
                                 "with l_eyelid.npy and r_eyelid.npy")
        try:
            check_numpy_file(p)
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise FlameFileError(f"{p} is not a readable .npy file ({exc})") from None
        if arr.shape != (N_VERTICES, 3):
            raise FlameFileError(f"{p} has shape {arr.shape}; expected {N_VERTICES} vertices x 3")
        result.append(arr.astype(np.float32))
    return result[0], result[1]
