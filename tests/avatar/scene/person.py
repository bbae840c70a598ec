"""A recorded person with a known answer, for the torso command: a short video of a head, neck and shoulders
over a plain wall, and the dataset prepared from it as `avatar prepare` lays it out (square crops around the
head in imgs/, alpha/, parsing/*_neckhead.png and *_mouth.png, tracker .frame files, crops.csv), drawn in code.

Frame NEUTRAL is the one whose tracked expression and jaw are at rest; the others talk."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

W, H = 320, 240
FRAMES = 8
FPS = 10
NEUTRAL = 4
WALL = (70, 90, 120)
SKIN = (215, 170, 145)
SHIRT = (200, 60, 50)
NECK_X0, NECK_X1 = 145, 175  # the neck's columns: 30 px wide
NECK_TOP, BODY_TOP = 118, 170  # the shirt covers the neck from BODY_TOP down
HEAD_C, HEAD_R = (160.0, 88.0), (30.0, 38.0)
CROP = (90.0, 30.0, 230.0, 170.0)  # the head-and-neck square, as a face cropper draws it
CROP_SIZE = 128


def masks(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head, neck, body) boolean masks of frame i in video pixels; the head sways a pixel or two."""
    y, x = np.mgrid[0:H, 0:W]
    cx = HEAD_C[0] + (0 if i == NEUTRAL else 2 * np.sin(i))
    head = ((x - cx) / HEAD_R[0]) ** 2 + ((y - HEAD_C[1]) / HEAD_R[1]) ** 2 <= 1.0
    neck = (x >= NECK_X0) & (x < NECK_X1) & (y >= NECK_TOP) & (y < BODY_TOP)
    half = 40 + (y - BODY_TOP) * 1.6  # shoulders widen below the collar, past the crop's sides
    body = (y >= BODY_TOP) & (np.abs(x - 160) <= half)
    return head, neck & ~head, body


def picture(i: int) -> np.ndarray:
    head, neck, body = masks(i)
    out = np.empty((H, W, 3), np.uint8)
    out[:] = WALL
    out[neck | head] = SKIN
    out[body] = SHIRT
    return out


def _frame_dict(i: int) -> dict[str, object]:
    f32 = np.float32
    expr = np.zeros(100, f32) if i == NEUTRAL else np.full(100, 0.3, f32)
    jaw = np.array([1, 0, 0, 0, 1, 0], f32) if i == NEUTRAL else np.array([1, 0.2, 0, 0, 1, 0], f32)
    K = np.array([[1000.0, 0, 256], [0, 1000.0, 256], [0, 0, 1]], f32)
    return {"flame": {"exp": expr[None], "shape": np.zeros((1, 300), f32), "jaw": jaw[None],
                      "eyes": np.tile(np.array([1, 0, 0, 0, 1, 0], f32), 2)[None], "eyelids": np.zeros((1, 2), f32)},
            "opencv": {"R": np.eye(3, dtype=f32)[None], "t": np.array([[0, 0, 1.0]], f32), "K": K[None]},
            "img_size": np.array([512, 512])}


def write_video(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "8", "preset": "ultrafast"}
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(picture(i), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_dataset(root: Path) -> None:
    """imgs/NNNNN.png (tracker frame m ↔ image m + 1), alpha/, parsing/, checkpoint/, crops.csv."""
    for sub in ("imgs", "alpha", "parsing", "checkpoint"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = (int(v) for v in CROP)
    rows = ["image,source_time_s,x0,y0,x1,y1"]
    for i in range(FRAMES):
        stem = f"{i + 1:05d}"
        head, neck, body = masks(i)

        def crop(a: np.ndarray, mode: str) -> Image.Image:
            return Image.fromarray(a[y0:y1, x0:x1]).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR
                                                             if mode == "RGB" else Image.Resampling.NEAREST)

        crop(picture(i), "RGB").save(root / "imgs" / f"{stem}.png")
        crop(((head | neck | body) * 255).astype(np.uint8), "L").save(root / "alpha" / f"{stem}.png")
        crop(((head | neck) * 255).astype(np.uint8), "L").save(root / "parsing" / f"{stem}_neckhead.png")
        crop(np.zeros((H, W), np.uint8), "L").save(root / "parsing" / f"{stem}_mouth.png")
        torch.save(_frame_dict(i), root / "checkpoint" / f"{i:05d}.frame")
        rows.append(f"{stem}.png,{i / FPS:.3f},{x0},{y0},{x1},{y1}")
    (root / "crops.csv").write_text("\n".join(rows) + "\n")
