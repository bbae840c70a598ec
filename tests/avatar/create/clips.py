"""Short real video files for the creation tests: scikit-image's public-domain astronaut photo (a real face that
mediapipe finds) moving over a background, encoded with libx264 by PyAV.

Options make the cases the pipeline must handle: a rotation tag (the display matrix a phone writes into the
mp4's track header), a variable frame rate (irregular timestamps), darkness, and a file cut short.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np


def astronaut() -> np.ndarray:
    from skimage import data

    return np.asarray(data.astronaut(), np.uint8)  # (512,512,3), the face at about x 174-278, y 68-172


def moving_face(i: int, width: int = 640, height: int = 480, face_px: int = 300) -> np.ndarray:
    """Frame i: the photo scaled to `face_px`, drifting slowly on a grey background."""
    from PIL import Image

    img = Image.fromarray(astronaut()).resize((face_px, face_px), Image.Resampling.BILINEAR)
    canvas = np.full((height, width, 3), 90, np.uint8)
    x = int(width / 2 - face_px / 2 + 20 * np.sin(i / 15))
    y = int(height / 2 - face_px / 2 + 8 * np.cos(i / 20))
    canvas[max(0, y):y + face_px, max(0, x):x + face_px] = np.asarray(img)[max(0, -y):height - y, max(0, -x):width - x]
    return canvas


def write_clip(path: Path, n: int, frame: Callable[[int], np.ndarray] = moving_face, fps: int = 25,
               times_ms: list[int] | None = None) -> Path:
    """An H.264 mp4 of `frame(i)` for i < n; `times_ms` gives each frame's own timestamp (variable rate)."""
    import av

    first = frame(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
        s.options = {"crf": "20", "preset": "ultrafast"}
        if times_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frame(i) if i else first, format="rgb24")
            if times_ms is not None:
                f.pts, f.time_base = times_ms[i], Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def tag_rotation(path: Path, clockwise: int) -> Path:
    """Write a display matrix into the mp4 track header that turns the picture `clockwise` degrees for display,
    as a phone does for portrait video (the decoded frame then reports a rotation of -clockwise)."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    off = i + 8 + (12 if version == 0 else 20) + 4 + (4 if version == 0 else 8) + 16
    c, s = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1), -90: (0, -1)}[clockwise]
    one = 1 << 16
    data[off:off + 36] = struct.pack(">9i", c * one, s * one, 0, -s * one, c * one, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path
