"""Where FlashAvatar's Gaussians live on the mesh: a 128x128 raster of the template's UV layout.

Every covered texel becomes one Gaussian bound to (triangle id, barycentric triple). A trained checkpoint
stores its Gaussians in the order of this raster, so the raster must be reproduced exactly, to the last bit of
the float32 barycentrics: this module redoes PyTorch3D's CPU mesh rasteriser arithmetic (naive path,
blur radius 0, one face per pixel, no perspective correction) in float32 NumPy, without depending on it.

Conventions (as FlashAvatar sets them up): UV (u, v) maps to the rasteriser's screen as x = -(2u - 1),
y = 2v - 1, z = 1; output pixel (row, col) samples NDC x = 1 - (2 col + 1)/S, y = 1 - (2 row + 1)/S, i.e. UV
(u, v) = ((col + .5)/S, 1 - (row + .5)/S). A texel is covered when all three barycentrics are > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

_EPS = 1e-8  # PyTorch3D's kEpsilon (a double constant)
F32 = np.float32


@dataclass
class UVRaster:
    """The raster and the Gaussians it defines.

    pix_to_face (S,S) int64 (-1 = empty), bary (S,S,3) float32 (-1 where empty), uv_mask (S*S,) bool
    (row-major covered texels), texel_faces (M,) and texel_bary (M,3) of the covered texels in row-major order.
    """

    pix_to_face: NDArray[np.int64]
    bary: NDArray[np.float32]
    uv_mask: NDArray[np.bool_]
    texel_faces: NDArray[np.int64]
    texel_bary: NDArray[np.float32]

    @property
    def size(self) -> int:
        return int(self.pix_to_face.shape[0])


def _edge(px: NDArray[F32], py: NDArray[F32], ax: NDArray[F32], ay: NDArray[F32], bx: NDArray[F32],
          by: NDArray[F32]) -> NDArray[F32]:
    """PyTorch3D's edge function (p - a) x (b - a), evaluated op by op in float32."""
    return ((px - ax) * (by - ay) - (py - ay) * (bx - ax)).astype(F32)


def _pix_to_ndc(i: NDArray[np.int64], size: int) -> NDArray[F32]:
    # -1 + (2 i + 1) / S, every step exact in float32 for S <= 2^20.
    return (F32(-1.0) + (F32(2.0) * i.astype(F32) + F32(1.0)) / F32(size)).astype(F32)


def rasterize_uv(uvs: NDArray[np.floating], uv_faces: NDArray[np.integer], size: int = 128) -> UVRaster:
    """Rasterise the UV triangles at `size` x `size` exactly as FlashAvatar's PyTorch3D call does."""
    uv = np.asarray(uvs, dtype=F32)
    tri = np.asarray(uv_faces, dtype=np.int64)
    if uv.ndim != 2 or uv.shape[1] != 2 or tri.ndim != 2 or tri.shape[1] != 3:
        raise ValueError(f"need UVs (T,2) and UV faces (F,3); got {uv.shape} and {tri.shape}")
    # FlashAvatar: uv*2-1, flip y; its rasteriser wrapper then negates x and y.
    sx = (-(uv[:, 0] * F32(2.0) - F32(1.0))).astype(F32)
    sy = (uv[:, 1] * F32(2.0) - F32(1.0)).astype(F32)
    x = sx[tri]  # (F,3)
    y = sy[tri]
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    y0, y1, y2 = y[:, 0], y[:, 1], y[:, 2]
    face_area = _edge(x0, y0, x1, y1, x2, y2)
    valid = ~((face_area.astype(np.float64) <= _EPS) & (face_area.astype(np.float64) >= -_EPS))
    area = (_edge(x2, y2, x0, y0, x1, y1).astype(np.float64) + _EPS).astype(F32)
    xmin, xmax = x.min(1), x.max(1)
    ymin, ymax = y.min(1), y.max(1)

    # Candidate pixels per face from its bounding box (one pixel of slack; the exact test follows).
    # xf(col) = 1 - (2 col + 1)/S  →  col = ((1 - xf) S - 1)/2, decreasing in xf.
    s = float(size)
    c_lo = np.clip(np.floor(((1.0 - xmax.astype(np.float64)) * s - 1.0) / 2.0) - 1, 0, size - 1).astype(np.int64)
    c_hi = np.clip(np.ceil(((1.0 - xmin.astype(np.float64)) * s - 1.0) / 2.0) + 1, 0, size - 1).astype(np.int64)
    r_lo = np.clip(np.floor(((1.0 - ymax.astype(np.float64)) * s - 1.0) / 2.0) - 1, 0, size - 1).astype(np.int64)
    r_hi = np.clip(np.ceil(((1.0 - ymin.astype(np.float64)) * s - 1.0) / 2.0) + 1, 0, size - 1).astype(np.int64)
    faces_idx = np.nonzero(valid)[0]
    nc = (c_hi - c_lo + 1)[faces_idx]
    nr = (r_hi - r_lo + 1)[faces_idx]
    counts = nc * nr
    f_rep = np.repeat(faces_idx, counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    local = np.arange(f_rep.shape[0]) - start
    nc_rep = np.repeat(nc, counts)
    rows = r_lo[f_rep] + local // nc_rep
    cols = c_lo[f_rep] + local % nc_rep

    px = _pix_to_ndc(size - 1 - cols, size)
    py = _pix_to_ndc(size - 1 - rows, size)
    fx0, fx1, fx2 = x0[f_rep], x1[f_rep], x2[f_rep]
    fy0, fy1, fy2 = y0[f_rep], y1[f_rep], y2[f_rep]
    inside_box = ~((px > xmax[f_rep]) | (px < xmin[f_rep]) | (py > ymax[f_rep]) | (py < ymin[f_rep]))
    a = area[f_rep]
    w0 = (_edge(px, py, fx1, fy1, fx2, fy2) / a).astype(F32)
    w1 = (_edge(px, py, fx2, fy2, fx0, fy0) / a).astype(F32)
    w2 = (_edge(px, py, fx0, fy0, fx1, fy1) / a).astype(F32)
    pz = ((w0 + w1).astype(F32) + w2).astype(F32)  # z = 1 for every corner
    hit = inside_box & (w0 > 0) & (w1 > 0) & (w2 > 0) & (pz >= 0)

    rows, cols, f_hit = rows[hit], cols[hit], f_rep[hit]
    w = np.stack([w0[hit], w1[hit], w2[hit]], axis=1)
    # One face per pixel: the nearest (smallest z), ties to the lower face id (PyTorch3D sorts (z, face)).
    flat = rows * size + cols
    order = np.lexsort((f_hit, pz[hit], flat))
    flat, f_hit, w = flat[order], f_hit[order], w[order]
    first = np.ones(flat.shape[0], dtype=bool)
    first[1:] = flat[1:] != flat[:-1]
    flat, f_hit, w = flat[first], f_hit[first], w[first]

    pix_to_face = np.full(size * size, -1, dtype=np.int64)
    bary = np.full((size * size, 3), -1.0, dtype=F32)
    pix_to_face[flat] = f_hit
    bary[flat] = w
    uv_mask = pix_to_face >= 0
    return UVRaster(
        pix_to_face=pix_to_face.reshape(size, size),
        bary=bary.reshape(size, size, 3),
        uv_mask=uv_mask,
        texel_faces=pix_to_face[uv_mask],
        texel_bary=bary[uv_mask],
    )


def head_mask(raster: UVRaster, faces: NDArray[np.integer], boundary: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Covered texels whose triangle has no vertex on the mask boundary (FLAME_masks['boundary'])."""
    tri = np.asarray(faces, dtype=np.int64)[raster.texel_faces]  # (M,3) vertex ids
    bad = np.zeros(int(max(tri.max(), np.max(boundary, initial=0))) + 1, dtype=bool)
    bad[np.asarray(boundary, dtype=np.int64).reshape(-1)] = True
    keep: NDArray[np.bool_] = np.logical_not(bad[tri].any(axis=1))
    return keep
