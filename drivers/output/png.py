"""PNG encoding with PyAV's encoder (no imaging library needed)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray


def encode_png(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8] | None = None) -> bytes:
    """RGB (H,W,3) uint8, plus optional alpha (H,W), to PNG bytes."""
    if alpha is not None:
        image, fmt = np.ascontiguousarray(np.dstack([rgb, alpha])), "rgba"
    else:
        image, fmt = np.ascontiguousarray(rgb), "rgb24"
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height = image.shape[1], image.shape[0]
    codec.pix_fmt = fmt
    frame = av.VideoFrame.from_ndarray(image, format=fmt)
    packets = codec.encode(frame) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_png(path: Path | str, rgb: NDArray[np.uint8], alpha: NDArray[np.uint8] | None = None) -> Path:
    path = Path(path)
    path.write_bytes(encode_png(rgb, alpha))
    return path
