"""Premultiplied "over" on uint8 pictures, the same integer maths in NumPy (CPU) and torch (GPU):

    out = src + dst * (255 - a) / 255          colour, src premultiplied by its alpha a (a = 0: out = dst)
    out_a = a + dst_a * (255 - a) / 255         alpha

(colour clamped at 255: a renderer's rounding may leave it a step above its alpha), with x / 255 rounded to nearest as (y + 128 + ((y + 128) >> 8)) >> 8, exact for every product of two bytes.
A soft edge composites as the renderer blended it against black, so no dark or light fringe appears.

Layers are drawn where they are: a region's corner in the frame and its pixels, clipped to the frame; only the
region is touched (a head's ROI, a torso's box), never a whole frame more than once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray


def _div255_np(y: NDArray[Any]) -> NDArray[Any]:
    y = y + 128
    return (y + (y >> 8)) >> 8


def _div255_torch(y: torch.Tensor) -> torch.Tensor:
    y = y + 128
    return (y + (y >> 8)) >> 8


def clip_box(x0: int, y0: int, w: int, h: int, width: int, height: int) -> tuple[slice, slice, slice, slice] | None:
    """(frame rows, frame cols, layer rows, layer cols) of a w x h layer at (x0, y0) clipped to the frame."""
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + w), min(height, y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    return (slice(fy0, fy1), slice(fx0, fx1), slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))


def over_np(dst: NDArray[np.uint8], dst_alpha: NDArray[np.uint8] | None, src: NDArray[np.uint8],
            src_alpha: NDArray[np.uint8], x0: int, y0: int) -> None:
    """Draw premultiplied `src` (h, w, 3) with `src_alpha` (h, w) over `dst` (H, W, 3) at (x0, y0), in place;
    `dst_alpha` (H, W), when given, accumulates coverage. Opaque pixels are copied and transparent ones left
    alone; only the soft edge goes through the arithmetic (uint16: every intermediate fits)."""
    box = clip_box(x0, y0, src.shape[1], src.shape[0], dst.shape[1], dst.shape[0])
    if box is None:
        return
    fr, fc, lr, lc = box
    a = src_alpha[lr, lc]
    s = src[lr, lc]
    d = dst[fr, fc]
    opaque = a == 255
    np.putmask(d, np.repeat(opaque[..., None], 3, axis=2), s)  # faster than copyto(where=) with a broadcast mask
    ys, xs = np.nonzero((a != 0) & ~opaque)
    if len(ys):
        ae = a[ys, xs]
        inv = (255 - ae).astype(np.uint16)
        de = d[ys, xs].astype(np.uint16)
        d[ys, xs] = np.minimum(s[ys, xs] + _div255_np(de * inv[:, None]), 255)
    if dst_alpha is not None:
        da = dst_alpha[fr, fc]
        da[opaque] = 255
        if len(ys):
            da[ys, xs] = ae + _div255_np(da[ys, xs].astype(np.uint16) * inv)


def over_torch(dst: torch.Tensor, dst_alpha: torch.Tensor | None, src: torch.Tensor, src_alpha: torch.Tensor,
               x0: int, y0: int) -> None:
    """`over_np` for uint8 tensors on any device (int32 maths over the whole box: on a GPU the branches cost
    more than the arithmetic), bit-identical to the NumPy path."""
    box = clip_box(x0, y0, int(src.shape[1]), int(src.shape[0]), int(dst.shape[1]), int(dst.shape[0]))
    if box is None:
        return
    fr, fc, lr, lc = box
    a = src_alpha[lr, lc]
    inv = 255 - a.to(torch.int32)
    s = src[lr, lc].to(torch.int32) * (a > 0)[..., None]  # a pixel of alpha 0 adds nothing, as on the CPU
    d = dst[fr, fc]
    d.copy_((s + _div255_torch(d.to(torch.int32) * inv[..., None])).clamp_(max=255))
    if dst_alpha is not None:
        da = dst_alpha[fr, fc]
        da.copy_(a + _div255_torch(da.to(torch.int32) * inv))


def premultiply_np(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Straight colour → premultiplied (rounded as in `over`)."""
    return _div255_np(rgb.astype(np.uint32) * alpha[..., None].astype(np.uint32)).astype(np.uint8)


def is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)
