"""The compiled kernels of the CPU tile rasteriser (numba): projection, tile binning and tile rasterisation.

Importing this module needs numba (ImportError otherwise); `tiles.TileSplatRenderer` drives the kernels.
They follow gsplat's classic rasteriser (and the torch reference in `reference`) step by step:

* `project`: EWA splatting of R S S^T R^T through the pinhole Jacobian (mean clamped to 1.3x the field of view
  for the Jacobian only), eps2d added, culling outside [near, far], opacity below 1/255, non-positive 2D
  determinant, radius_clip and boxes off the image; opacity-aware radius
  ceil(min(3.33, sqrt(2 ln(opacity / min_alpha))) * sigma) per axis.
* `depth_order`: the visible Gaussians front to back (a stable radix sort of their depths).
* `bin_tiles`: the visible Gaussians, already in front-to-back depth order, are appended to the list of every
  16x16 tile their box of pixel centres touches, so each tile's list is depth-sorted (the same order gsplat's
  (tile, depth) key sort gives).
* `rasterize`: one tile per task, in parallel (tiles in `spread_order`, so that each thread's share of the
  loop covers the whole image, not just its top or bottom); per pixel centre (x + 0.5, y + 0.5)
  alpha = min(max_alpha, opacity exp(-sigma)), skipped below min_alpha, front-to-back compositing that stops
  before transmittance would reach min_transmittance (a bit mask per row of the tile says which pixels still
  take Gaussians, so the stopped ones cost nothing), and a tile stops when all its pixels have.

Each row of a Gaussian is cut down to the span where its ellipse can reach min_alpha (solved from the conic,
padded against rounding); the alpha test then decides exactly as the references do, so the span only saves
work. Numbers are float64 inside, float32 out.

Parallel kernels run on numba's "workqueue" threads unless $NUMBA_THREADING_LAYER says otherwise: its threads
sleep between launches, where an OpenMP pool spins and, beside torch's own OpenMP pool, steals the cores torch
needs for the next step (measured on two cores: preparing the demo head's Gaussians went from 3 to 40 ms a
frame).
The workqueue layer must not be entered from two threads at once. `project` and `rasterize` therefore have
serial twins (`project_serial`, `rasterize_serial`: the same per-Gaussian and per-tile bodies, looped on the
calling thread) that any number of threads may run at once: `tiles` runs the parallel ones for a render that is
alone and the serial ones beside another, so several sessions' renders share the cores without queueing for
the pool (and without its hand-offs, which cost more than they save once the cores are all busy).

Kernels are compiled on first use and cached on disk (`cache=True`): next to this file when that is writable,
else numba's per-user cache (or `$NUMBA_CACHE_DIR`); where no cache folder is writable they still compile,
every process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]

TILE = 16
EXTEND_MAX = 3.33
SPAN_PAD = 0.05  # pixels added to each analytic row span against float rounding


def _compiled(parallel: bool, inline: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """numba.njit with an on-disk cache; without a writable cache folder, the same kernel uncached. `inline`: a
    body that the parallel kernel and its serial twin share, inlined into both (a call per Gaussian would cost
    as much as its work)."""

    def wrap(fn: Callable[..., Any]) -> Any:
        options: dict[str, Any] = {"parallel": parallel, "fastmath": False, "nogil": True}
        if inline:
            options["inline"] = "always"
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(fn)

    return wrap


@_compiled(parallel=True)
def project(
    means: np.ndarray,  # (N,3) float32
    quats: np.ndarray,  # (N,4) float32, (w,x,y,z)
    scales: np.ndarray,  # (N,3) float32
    opacities: np.ndarray,  # (N,) float32
    view: np.ndarray,  # (4,4) float64 world→camera
    intr: np.ndarray,  # (4,) float64 fx, fy, cx, cy
    width: int,
    height: int,
    near: float,
    far: float,
    eps2d: float,
    min_alpha: float,
    radius_clip: float,
    xy: np.ndarray,  # out (N,2) float64 pixel position of the mean
    conic: np.ndarray,  # out (N,3) float64 inverse 2D covariance (a, b, c)
    depth: np.ndarray,  # out (N,) float64 camera z
    box: np.ndarray,  # out (N,4) int64 pixel-centre box x0, x1, y0, y1 (inclusive) clipped to the image
    visible: np.ndarray,  # out (N,) bool
) -> None:
    frame = _frame_constants(intr, width, height)
    for i in prange(means.shape[0]):
        _project_one(i, means, quats, scales, opacities, view, frame, near, far, eps2d, min_alpha, radius_clip, xy,
                     conic, depth, box, visible)


@_compiled(parallel=False)
def project_serial(
    means: np.ndarray, quats: np.ndarray, scales: np.ndarray, opacities: np.ndarray, view: np.ndarray,
    intr: np.ndarray, width: int, height: int, near: float, far: float, eps2d: float, min_alpha: float,
    radius_clip: float, xy: np.ndarray, conic: np.ndarray, depth: np.ndarray, box: np.ndarray, visible: np.ndarray,
) -> None:
    """`project` on the calling thread alone."""
    frame = _frame_constants(intr, width, height)
    for i in range(means.shape[0]):
        _project_one(i, means, quats, scales, opacities, view, frame, near, far, eps2d, min_alpha, radius_clip, xy,
                     conic, depth, box, visible)


@_compiled(parallel=False)
def _frame_constants(intr: np.ndarray, width: int, height: int) -> np.ndarray:
    """What every Gaussian's projection shares: fx, fy, cx, cy, the image's width and height, and the guard band's
    limits of x/z and y/z (1.3x the field of view) that clamp the Jacobian."""
    fx, fy, cx, cy = intr[0], intr[1], intr[2], intr[3]
    w = float(width)
    h = float(height)
    tan_x = 0.5 * w / fx
    tan_y = 0.5 * h / fy
    out = np.empty(10)
    out[0], out[1], out[2], out[3], out[4], out[5] = fx, fy, cx, cy, w, h
    out[6] = (w - cx) / fx + 0.3 * tan_x
    out[7] = cx / fx + 0.3 * tan_x
    out[8] = (h - cy) / fy + 0.3 * tan_y
    out[9] = cy / fy + 0.3 * tan_y
    return out


@_compiled(parallel=False, inline=True)
def _project_one(
    i: int,
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    view: np.ndarray,
    frame: np.ndarray,  # _frame_constants
    near: float,
    far: float,
    eps2d: float,
    min_alpha: float,
    radius_clip: float,
    xy: np.ndarray,
    conic: np.ndarray,
    depth: np.ndarray,
    box: np.ndarray,
    visible: np.ndarray,
) -> None:
    """Project Gaussian i (see the module docstring); its outputs are left unset when it is not visible."""
    fx, fy, cx, cy, w, h = frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]
    lim_xp, lim_xn, lim_yp, lim_yn = frame[6], frame[7], frame[8], frame[9]
    visible[i] = False
    mx_w, my_w, mz_w = float(means[i, 0]), float(means[i, 1]), float(means[i, 2])
    x = view[0, 0] * mx_w + view[0, 1] * my_w + view[0, 2] * mz_w + view[0, 3]
    y = view[1, 0] * mx_w + view[1, 1] * my_w + view[1, 2] * mz_w + view[1, 3]
    z = view[2, 0] * mx_w + view[2, 1] * my_w + view[2, 2] * mz_w + view[2, 3]
    op = float(opacities[i])
    if not (z >= near and z <= far and op >= min_alpha):
        return
    # Rotation of the (normalised) quaternion, then M = R_view R_q S: the camera covariance is M M^T.
    qw, qx, qy, qz = float(quats[i, 0]), float(quats[i, 1]), float(quats[i, 2]), float(quats[i, 3])
    qn = max(math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)
    qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
    r00 = 1.0 - 2.0 * (qy * qy + qz * qz)
    r01 = 2.0 * (qx * qy - qw * qz)
    r02 = 2.0 * (qx * qz + qw * qy)
    r10 = 2.0 * (qx * qy + qw * qz)
    r11 = 1.0 - 2.0 * (qx * qx + qz * qz)
    r12 = 2.0 * (qy * qz - qw * qx)
    r20 = 2.0 * (qx * qz - qw * qy)
    r21 = 2.0 * (qy * qz + qw * qx)
    r22 = 1.0 - 2.0 * (qx * qx + qy * qy)
    sx, sy, sz = float(scales[i, 0]), float(scales[i, 1]), float(scales[i, 2])
    # Rows of M (3x3) = view_R @ R_q @ diag(s).
    m00 = (view[0, 0] * r00 + view[0, 1] * r10 + view[0, 2] * r20) * sx
    m01 = (view[0, 0] * r01 + view[0, 1] * r11 + view[0, 2] * r21) * sy
    m02 = (view[0, 0] * r02 + view[0, 1] * r12 + view[0, 2] * r22) * sz
    m10 = (view[1, 0] * r00 + view[1, 1] * r10 + view[1, 2] * r20) * sx
    m11 = (view[1, 0] * r01 + view[1, 1] * r11 + view[1, 2] * r21) * sy
    m12 = (view[1, 0] * r02 + view[1, 1] * r12 + view[1, 2] * r22) * sz
    m20 = (view[2, 0] * r00 + view[2, 1] * r10 + view[2, 2] * r20) * sx
    m21 = (view[2, 0] * r01 + view[2, 1] * r11 + view[2, 2] * r21) * sy
    m22 = (view[2, 0] * r02 + view[2, 1] * r12 + view[2, 2] * r22) * sz
    # Jacobian of the projection at the mean clamped to the guard band: rows (j00, 0, j02), (0, j11, j12).
    rz = 1.0 / z
    tx = z * min(lim_xp, max(-lim_xn, x * rz))
    ty = z * min(lim_yp, max(-lim_yn, y * rz))
    j00 = fx * rz
    j02 = -fx * tx * rz * rz
    j11 = fy * rz
    j12 = -fy * ty * rz * rz
    # T = J M (2x3); cov2d = T T^T.
    t00 = j00 * m00 + j02 * m20
    t01 = j00 * m01 + j02 * m21
    t02 = j00 * m02 + j02 * m22
    t10 = j11 * m10 + j12 * m20
    t11 = j11 * m11 + j12 * m21
    t12 = j11 * m12 + j12 * m22
    a = t00 * t00 + t01 * t01 + t02 * t02 + eps2d
    b = t00 * t10 + t01 * t11 + t02 * t12
    c = t10 * t10 + t11 * t11 + t12 * t12 + eps2d
    det = a * c - b * b
    if not det > 0.0:
        return
    extend = min(EXTEND_MAX, math.sqrt(2.0 * math.log(op / min_alpha)))
    rx = math.ceil(extend * math.sqrt(max(a, 0.0)))
    ry = math.ceil(extend * math.sqrt(max(c, 0.0)))
    if rx <= radius_clip and ry <= radius_clip:
        return
    u = fx * x * rz + cx
    v = fy * y * rz + cy
    if not (u + rx > 0.0 and u - rx < w and v + ry > 0.0 and v - ry < h):
        return
    # Pixels whose centre p + 0.5 lies inside [mean - r, mean + r], clipped to the image (clamped as floats
    # first: a huge radius must not overflow the integer conversion).
    x0 = max(0.0, math.ceil(u - rx - 0.5))
    x1 = min(w - 1.0, math.floor(u + rx - 0.5))
    y0 = max(0.0, math.ceil(v - ry - 0.5))
    y1 = min(h - 1.0, math.floor(v + ry - 0.5))
    if x0 > x1 or y0 > y1:
        return
    xy[i, 0] = u
    xy[i, 1] = v
    conic[i, 0] = c / det
    conic[i, 1] = -b / det
    conic[i, 2] = a / det
    depth[i] = z
    box[i, 0] = int(x0)
    box[i, 1] = int(x1)
    box[i, 2] = int(y0)
    box[i, 3] = int(y1)
    visible[i] = True


@_compiled(parallel=False)
def bin_tiles(box: np.ndarray, order: np.ndarray, tiles_x: int, tiles_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile lists of Gaussians (positions in `order`, the front-to-back order): returns (offsets
    (tiles+1,), items) with tile t's list at items[offsets[t]:offsets[t+1]], each in depth order."""
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, np.int64)
    for k in range(order.shape[0]):
        g = order[k]
        for ty in range(box[g, 2] // TILE, box[g, 3] // TILE + 1):
            for tx in range(box[g, 0] // TILE, box[g, 1] // TILE + 1):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    items = np.empty(offsets[n_tiles], np.int32)
    fill = offsets[:n_tiles].copy()
    for k in range(order.shape[0]):
        g = order[k]
        for ty in range(box[g, 2] // TILE, box[g, 3] // TILE + 1):
            for tx in range(box[g, 0] // TILE, box[g, 1] // TILE + 1):
                t = ty * tiles_x + tx
                items[fill[t]] = k
                fill[t] += 1
    return offsets, items


@_compiled(parallel=False)
def depth_order(visible: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The indices of the visible Gaussians, nearest first, ties in index order: what a stable argsort of their
    depths gives, as a radix sort of the depths' bits (positive doubles order as their bit patterns do), one
    byte per pass, skipping the bytes every depth shares."""
    idx = np.flatnonzero(visible)
    n = idx.shape[0]
    bits = depth.view(np.uint64)
    keys = np.empty(n, np.uint64)
    for i in range(n):  # a visible Gaussian is in front of the camera (z >= near); z <= 0 (near <= 0) sorts first
        keys[i] = bits[idx[i]] if depth[idx[i]] > 0.0 else np.uint64(0)
    order = idx.copy()
    spare_keys = np.empty(n, np.uint64)
    spare = np.empty(n, np.int64)
    counts = np.empty(257, np.int64)
    for shift in range(0, 64, 8):
        counts[:] = 0
        for i in range(n):
            counts[((keys[i] >> np.uint64(shift)) & np.uint64(255)) + 1] += 1
        if n == 0 or counts.max() == n:  # every key has this byte: the pass would keep the order
            continue
        for b in range(256):
            counts[b + 1] += counts[b]
        for i in range(n):
            b = (keys[i] >> np.uint64(shift)) & np.uint64(255)
            at = counts[b]
            counts[b] = at + 1
            spare_keys[at] = keys[i]
            spare[at] = order[i]
        keys, spare_keys = spare_keys, keys
        order, spare = spare, order
    return order


def spread_order(n: int) -> np.ndarray:
    """A permutation of range(n) whose every contiguous slice samples the whole range evenly: i * s mod n, with
    s near n / golden ratio and coprime to n. numba's default threading layer hands each thread one contiguous
    slice of a parallel loop; taken in raster order, the thread with the face's busier half would finish last."""
    s = max(1, round(n * 0.618))
    while math.gcd(s, n) != 1:
        s += 1
    return (np.arange(n, dtype=np.int64) * s) % max(n, 1)


@_compiled(parallel=True)
def rasterize(
    tile_order: np.ndarray,  # (tiles,) the order in which the parallel loop takes the tiles
    order: np.ndarray,  # (M,) Gaussian index, front to back
    xy: np.ndarray,
    conic: np.ndarray,
    opacities: np.ndarray,  # (N,) float32
    box: np.ndarray,
    colors: np.ndarray,  # (M,3) float32, in `order`
    offsets: np.ndarray,
    items: np.ndarray,
    width: int,
    height: int,
    tiles_x: int,
    background: np.ndarray,  # (3,) float64
    max_alpha: float,
    min_alpha: float,
    min_transmittance: float,
    rgb: np.ndarray,  # out (H,W,3) float32
    alpha: np.ndarray,  # out (H,W) float32
) -> None:
    for i in prange(offsets.shape[0] - 1):
        _raster_tile(tile_order[i], order, xy, conic, opacities, box, colors, offsets, items, width, height, tiles_x,
                     background, max_alpha, min_alpha, min_transmittance, rgb, alpha)


@_compiled(parallel=False)
def rasterize_serial(
    tile_order: np.ndarray, order: np.ndarray, xy: np.ndarray, conic: np.ndarray, opacities: np.ndarray,
    box: np.ndarray, colors: np.ndarray, offsets: np.ndarray, items: np.ndarray, width: int, height: int,
    tiles_x: int, background: np.ndarray, max_alpha: float, min_alpha: float, min_transmittance: float,
    rgb: np.ndarray, alpha: np.ndarray,
) -> None:
    """`rasterize` on the calling thread alone."""
    for i in range(offsets.shape[0] - 1):
        _raster_tile(tile_order[i], order, xy, conic, opacities, box, colors, offsets, items, width, height, tiles_x,
                     background, max_alpha, min_alpha, min_transmittance, rgb, alpha)


@_compiled(parallel=False, inline=True)
def _raster_tile(
    t: int, order: np.ndarray, xy: np.ndarray, conic: np.ndarray, opacities: np.ndarray, box: np.ndarray,
    colors: np.ndarray, offsets: np.ndarray, items: np.ndarray, width: int, height: int, tiles_x: int,
    background: np.ndarray, max_alpha: float, min_alpha: float, min_transmittance: float, rgb: np.ndarray,
    alpha: np.ndarray,
) -> None:
    """Rasterise tile t (see the module docstring)."""
    log_min_alpha = math.log(min_alpha)
    ty = t // tiles_x
    tx = t - ty * tiles_x
    x0 = tx * TILE
    y0 = ty * TILE
    tw = min(TILE, width - x0)
    th = min(TILE, height - y0)
    trans = np.ones(TILE * TILE)
    acc = np.zeros((TILE * TILE, 3))
    # Bit x of open_px[y] is set while pixel (x0 + x, y0 + y) still takes Gaussians: a row's span is tested
    # against it at once, and a span whose pixels have all stopped costs no pixel visits.
    open_px = np.full(TILE, (1 << tw) - 1, np.int64)
    live = tw * th
    for j in range(offsets[t], offsets[t + 1]):
        if live == 0:
            break
        k = items[j]
        g = order[k]
        mx, my = xy[g, 0], xy[g, 1]
        ca, cb, cc = conic[g, 0], conic[g, 1], conic[g, 2]
        op = float(opacities[g])
        # sigma <= thresh is where opacity exp(-sigma) can reach min_alpha.
        thresh = math.log(op) - log_min_alpha
        inv_a = 1.0 / max(ca, 1e-12)
        cr, cgr, cbl = float(colors[k, 0]), float(colors[k, 1]), float(colors[k, 2])
        bx0 = max(x0, box[g, 0])
        bx1 = min(x0 + tw - 1, box[g, 1])
        columns = ((1 << (bx1 - x0 + 1)) - 1) ^ ((1 << (bx0 - x0)) - 1)  # the box's pixels of a row
        for py in range(max(y0, box[g, 2]), min(y0 + th - 1, box[g, 3]) + 1):
            ly = py - y0
            if open_px[ly] & columns == 0:
                continue
            dy = my - (py + 0.5)
            bdy = cb * dy
            disc = bdy * bdy - ca * (cc * dy * dy - 2.0 * thresh)
            if disc < 0.0:
                continue
            root = math.sqrt(disc)
            # dx = mx - (px + 0.5) in [(-bdy - root) / a, (-bdy + root) / a]. Written so that a NaN from
            # overflowing input keeps the box's bound: the pixel loop never leaves the tile.
            lo_f = math.ceil(mx - 0.5 - (root - bdy) * inv_a - SPAN_PAD)
            hi_f = math.floor(mx - 0.5 + (root + bdy) * inv_a + SPAN_PAD)
            if not lo_f > bx0:
                lo_f = float(bx0)
            if not hi_f < bx1:
                hi_f = float(bx1)
            if lo_f > hi_f:
                continue
            lo, hi = int(lo_f) - x0, int(hi_f) - x0
            todo = open_px[ly] & (((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1))
            if todo == 0:
                continue
            row = ly * TILE
            for lx in range(lo, hi + 1):
                if not (todo >> lx) & 1:
                    continue
                p = row + lx
                dx = mx - (x0 + lx + 0.5)
                sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                if sigma < 0.0:
                    continue
                a = min(max_alpha, op * math.exp(-sigma))
                if a < min_alpha:
                    continue
                t_now = trans[p]
                t_next = t_now * (1.0 - a)
                if t_next <= min_transmittance:
                    open_px[ly] &= ~(1 << lx)
                    live -= 1
                    continue
                wgt = a * t_now
                acc[p, 0] += wgt * cr
                acc[p, 1] += wgt * cgr
                acc[p, 2] += wgt * cbl
                trans[p] = t_next
    for ly in range(th):
        for lx in range(tw):
            p = ly * TILE + lx
            tr = trans[p]
            for ch in range(3):
                rgb[y0 + ly, x0 + lx, ch] = acc[p, ch] + tr * background[ch]
            alpha[y0 + ly, x0 + lx] = 1.0 - tr
