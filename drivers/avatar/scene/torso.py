"""The torso plate: the body below the neck from one neutral frame of the user's own video, with its alpha, and
where the neck meets it, so the scene can draw it under the head (FlashAvatar models head and neck only).

File: an .npz with `rgba` (h, w, 4) uint8, colour premultiplied by alpha; `anchor` (x, y), the pixel where the
neck's centre line meets the body; `neck_width`, the neck's width in pixels just above that line (the scene
scales the plate so it matches the rendered neck); `version`. Headers are checked before arrays are read.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError
from drivers.avatar.scene.composite import premultiply_np

VERSION = 1
MAX_SIDE = 4096
NECK_PROBE = 0.08  # the neck's width is measured this far (fraction of the mask's height) above its lowest row
OVERLAP = 0.35  # neck widths of neck kept above the anchor in the plate: the rendered neck covers them


class TorsoError(UserError, ValueError):
    """A torso plate or its source that cannot be used; the message says which and what to do."""


@dataclass
class TorsoPlate:
    rgba: NDArray[np.uint8]  # premultiplied
    anchor: tuple[float, float]
    neck_width: float

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, rgba=self.rgba, anchor=np.asarray(self.anchor, np.float64),
                                neck_width=np.float64(self.neck_width), version=np.int64(VERSION))

    @classmethod
    def load(cls, path: Path) -> TorsoPlate:
        """Read a plate, checking each array's header (shape, type) before its data is read."""
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                want = {"rgba.npy", "anchor.npy", "neck_width.npy", "version.npy"}
                if not want <= names:
                    raise TorsoError(f"{path} is not a torso plate (missing {sorted(want - names)}); make one with "
                                     "'avatar-bridge avatar torso'")
                arrays = {}
                for name in sorted(want):
                    with z.open(name) as member:
                        major, _minor = np.lib.format.read_magic(member)
                        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                                       else np.lib.format.read_array_header_2_0)
                        shape, _fortran, dtype = read_header(member)
                        _check_header(path, name, tuple(shape), np.dtype(dtype))
                    with z.open(name) as member:  # the header was sane: read the array
                        arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            if isinstance(exc, TorsoError):
                raise
            raise TorsoError(f"torso plate {path} cannot be read ({exc}); make it again with "
                             "'avatar-bridge avatar torso'") from None
        if int(arrays["version.npy"]) != VERSION:
            raise TorsoError(f"torso plate {path} has version {int(arrays['version.npy'])}; this program reads "
                             f"{VERSION}: make it again")
        ax, ay = (float(v) for v in arrays["anchor.npy"])
        width = float(arrays["neck_width.npy"])
        if not (np.isfinite([ax, ay, width]).all() and width > 0):
            raise TorsoError(f"torso plate {path} has a bad anchor or neck width; make it again")
        return cls(arrays["rgba.npy"], (ax, ay), width)


def _check_header(path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    ok = {"rgba.npy": len(shape) == 3 and shape[2] == 4 and 0 < shape[0] <= MAX_SIDE and 0 < shape[1] <= MAX_SIDE
          and dtype == np.uint8,
          "anchor.npy": shape == (2,) and dtype.kind == "f",
          "neck_width.npy": shape == () and dtype.kind == "f",
          "version.npy": shape == () and dtype.kind == "i"}[name]
    if not ok:
        raise TorsoError(f"torso plate {path}: {name} has shape {shape} and type {dtype}, not a plate's")


def neck_line(neck_head: NDArray[np.bool_]) -> tuple[float, float, float]:
    """(x, y, width): the centre of the neck's lowest row of a head-and-neck mask, and the neck's width a little
    above it. The lowest rows of such a mask are the neck (the chin is above it)."""
    rows = np.flatnonzero(neck_head.any(axis=1))
    if len(rows) == 0:
        raise TorsoError("the head-and-neck mask is empty")
    top, bottom = int(rows[0]), int(rows[-1])
    probe = max(top, bottom - max(1, round(NECK_PROBE * (bottom - top + 1))))
    cols = np.flatnonzero(neck_head[probe])
    bottom_cols = np.flatnonzero(neck_head[bottom])
    return float(bottom_cols.mean()), float(bottom), float(cols[-1] - cols[0] + 1)


def cut_plate(image: NDArray[np.uint8], alpha: NDArray[np.uint8], neck_head: NDArray[np.bool_]) -> TorsoPlate:
    """The body of one photo: its alpha where the head-and-neck mask is not, plus the neck's last OVERLAP neck
    widths above the line (the rendered neck covers them, so no gap opens when it moves), cropped to what is
    left, premultiplied."""
    x, y, width = neck_line(neck_head)
    keep = alpha.copy()
    above = np.arange(alpha.shape[0])[:, None] < y - OVERLAP * width
    keep[neck_head & above] = 0
    rows, cols = np.flatnonzero((keep > 0).any(axis=1)), np.flatnonzero((keep > 0).any(axis=0))
    if len(rows) == 0 or rows[-1] <= y:
        raise TorsoError("nothing of the body shows below the neck in this frame; choose a video that shows the "
                         "shoulders")
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    rgb = premultiply_np(image[y0:y1, x0:x1, :3], keep[y0:y1, x0:x1])
    rgba = np.concatenate([rgb, keep[y0:y1, x0:x1, None]], axis=2)
    return TorsoPlate(np.ascontiguousarray(rgba), (x - x0, y - y0), width)
