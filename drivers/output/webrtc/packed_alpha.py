"""Packed alpha: the avatar's colour and its coverage (alpha) in one ordinary video frame, since WebRTC codecs
carry no alpha channel.

Layout ("stacked"): colour on top, a guard band, alpha as grey below, all in one I420 frame:

    rows [0, H)                 colour (premultiplied over black, as the renderers produce it)
    rows [H, Hc)                black padding up to Hc = H rounded up to 16
    rows [Hc, Hc + 16)          guard band (black, neutral chroma)
    rows [Hc + 16, Hc + 16 + H) alpha as luma, neutral chroma
    rows up to 2 Hc + 16        black padding (alpha 0)

Why stacked and not side by side: both double the area, but stacking keeps every row of the source contiguous
(the planes are copied, no per-row interleave), keeps the width (so the width limits of decoders and of
WebGL textures stay where the plain stream has them) and puts the seam on one horizontal macroblock edge.
Why the guard band: codecs filter and predict across macroblock edges; 16 flat rows between the halves keep
the colour's bottom rows out of the alpha's top rows and the other way round. A receiver finds the halves
from the frame height alone: Hc = (height - 16) / 2.

Alpha goes in as limited-range luma (16 + a * 219 / 255) with neutral chroma, so a receiver's ordinary
BT.601 YUV → RGB conversion gives back `a` in R, G and B, linear in the coverage (no gamma applies to it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

ALIGN = 16
GUARD_ROWS = 16
BLACK_Y = 16
NEUTRAL_C = 128

# alpha (0..255) → limited-range luma (16..235)
_ALPHA_TO_LUMA = np.round(16.0 + np.arange(256) * (219.0 / 255.0)).astype(np.uint8)


def colour_rows(height: int) -> int:
    """Rows given to the colour half: the frame height rounded up to a whole macroblock."""
    return -(-height // ALIGN) * ALIGN


def packed_height(height: int) -> int:
    return 2 * colour_rows(height) + GUARD_ROWS


def alpha_offset(height: int) -> int:
    """First row of the alpha half."""
    return colour_rows(height) + GUARD_ROWS


def split_i420(planes: NDArray[np.uint8], width: int, height: int) -> tuple[NDArray[np.uint8], ...]:
    """Y (H, W), U and V (H/2, W/2) views of an I420 buffer shaped (H*3/2, W) as PyAV gives it."""
    flat = planes.reshape(-1)
    y_size, c_size = width * height, (width // 2) * (height // 2)
    y = flat[:y_size].reshape(height, width)
    u = flat[y_size : y_size + c_size].reshape(height // 2, width // 2)
    v = flat[y_size + c_size : y_size + 2 * c_size].reshape(height // 2, width // 2)
    return y, u, v


def pack_i420(colour: NDArray[np.uint8], alpha: NDArray[np.uint8] | None, width: int, height: int) -> NDArray[np.uint8]:
    """The stacked frame as an I420 buffer shaped (Hp*3/2, W), from the colour's I420 buffer and the alpha
    (H, W); no alpha (an opaque avatar) packs as fully opaque."""
    hp = packed_height(height)
    out = np.empty((hp * 3 // 2, width), np.uint8)
    y, u, v = split_i420(out, width, hp)
    cy, cu, cv = split_i420(colour, width, height)
    top = alpha_offset(height)
    y[:height] = cy
    y[height:top] = BLACK_Y
    if alpha is None:
        y[top : top + height] = _ALPHA_TO_LUMA[255]
    else:
        np.take(_ALPHA_TO_LUMA, alpha, out=y[top : top + height])
    y[top + height :] = BLACK_Y
    u[: height // 2] = cu
    v[: height // 2] = cv
    u[height // 2 :] = NEUTRAL_C
    v[height // 2 :] = NEUTRAL_C
    return out


def unpack_rgb(packed: NDArray[np.uint8], height: int | None = None) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Colour (premultiplied) and alpha back from a decoded packed frame (Hp, W, 3) in RGB; what the /obs page
    does in its shader, for checks and for tools that read the stream. `height` crops the colour padding."""
    hp = packed.shape[0]
    hc = (hp - GUARD_ROWS) // 2
    rows = hc if height is None else height
    colour = packed[:rows]
    alpha = packed[hc + GUARD_ROWS : hc + GUARD_ROWS + rows, :, 1]
    return colour, alpha
