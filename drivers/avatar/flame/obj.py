"""Reader for the template mesh FlashAvatar ships (`FlameMesh.obj`): positions, UVs and `f v/vt/vn` triangles.

Only what the UV sampling needs is kept: vertex positions, texture coordinates, and per-triangle position and
texture indices (0-based). UVs are parsed straight to float32, as mesh loaders of the upstream tool chain do,
because the UV raster must reproduce their arithmetic bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError


class ObjError(UserError, ValueError):
    """The file is not a readable triangle OBJ with UVs."""


@dataclass
class ObjMesh:
    vertices: NDArray[np.float32]  # (V, 3)
    uvs: NDArray[np.float32]  # (T, 2)
    faces: NDArray[np.int64]  # (F, 3) position indices
    uv_faces: NDArray[np.int64]  # (F, 3) texture-coordinate indices


def _index(token: str, count: int, what: str, path: Path, line_no: int) -> int:
    value = int(token)
    idx = value - 1 if value > 0 else count + value
    if not 0 <= idx < count:
        raise ObjError(f"{path}:{line_no}: {what} index {value} is out of range (the file has {count})")
    return idx


def load_obj(path: Path | str) -> ObjMesh:
    """Parse `v`, `vt` and triangular `f` records; polygons with more corners are fanned into triangles."""
    path = Path(path)
    if not path.is_file():
        raise ObjError(f"mesh file {path} does not exist; point flame_mesh at FlameMesh.obj")
    verts: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    uv_faces: list[tuple[int, int, int]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ObjError(f"{path} is not a text OBJ file ({exc}); point flame_mesh at FlameMesh.obj") from None
    for line_no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        try:
            if tag == "v":
                verts.append([float(p) for p in parts[1:4]])
            elif tag == "vt":
                uvs.append([float(p) for p in parts[1:3]])
            elif tag == "f":
                corners = [c.split("/") for c in parts[1:]]
                if len(corners) < 3:
                    raise ObjError(f"{path}:{line_no}: a face needs at least three corners")
                if any(len(c) < 2 or not c[1] for c in corners):
                    raise ObjError(f"{path}:{line_no}: face without texture coordinates (need f v/vt/vn)")
                vi = [_index(c[0], len(verts), "vertex", path, line_no) for c in corners]
                ti = [_index(c[1], len(uvs), "texture coordinate", path, line_no) for c in corners]
                for k in range(1, len(corners) - 1):
                    faces.append((vi[0], vi[k], vi[k + 1]))
                    uv_faces.append((ti[0], ti[k], ti[k + 1]))
        except ValueError as exc:
            if isinstance(exc, ObjError):
                raise
            raise ObjError(f"{path}:{line_no}: cannot parse {line.strip()[:60]!r}") from None
    if not faces or not uvs:
        raise ObjError(f"{path} has no textured triangles; point flame_mesh at FlashAvatar's FlameMesh.obj")
    return ObjMesh(
        vertices=np.asarray(verts, dtype=np.float32).reshape(-1, 3),
        uvs=np.asarray(uvs, dtype=np.float32).reshape(-1, 2),
        faces=np.asarray(faces, dtype=np.int64),
        uv_faces=np.asarray(uv_faces, dtype=np.int64),
    )
