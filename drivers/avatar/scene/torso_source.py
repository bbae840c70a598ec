"""Making a torso plate from a prepared dataset and the video it was cut from.

The dataset's images are square crops of the video around the head (`crops.csv`: `image,source_time_s,x0,y0,
x1,y1`, one row per image, the crop's box in the video's pixels); its alpha and `parsing/*_neckhead.png` say
what is person and what is head-and-neck there. The shoulders mostly lie outside the crop, so the plate is cut
from the video frame itself: inside the crop box the dataset's alpha is used; outside it, a pixel is person
where its colour is far from the background's (learnt from the crop's pixels of alpha 0), for the plain or
steady backgrounds such videos are recorded against. The neck line is found on the neck-and-head mask.

The frame is the most neutral one the tracker saw: expression and jaw closest to rest and the head turned
least from its usual pose.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from drivers.avatar.flame.tracker import TrackerFrameError, load_tracker_frame
from drivers.avatar.flashavatar.train.dataset import FrameFiles, find_layout, list_frames
from drivers.avatar.scene.torso import TorsoError, TorsoPlate, cut_plate

MAX_CROP_ROWS = 1_000_000
MAX_SCORED = 400  # frames scored for neutrality (evenly spread over a long video)
JAW_REST = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)
BG_NEAR, BG_FAR = 2.5, 5.0  # background-distance (in standard deviations) where alpha ramps from 0 to 1


@dataclass(frozen=True)
class Crop:
    image: str
    time_s: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in video pixels


def read_crops(path: Path) -> dict[str, Crop]:
    """crops.csv by image name; a malformed row is an error naming its line."""
    if not path.is_file():
        raise TorsoError(f"{path} does not exist; 'avatar-bridge avatar prepare' writes it beside imgs/ (it maps "
                         "each image to its crop of the video)")
    out: dict[str, Crop] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        want = ["image", "source_time_s", "x0", "y0", "x1", "y1"]
        if reader.fieldnames is None or [n.strip() for n in reader.fieldnames] != want:
            raise TorsoError(f"{path}: the header must be {','.join(want)}")
        for line, row in enumerate(reader, start=2):
            if len(out) >= MAX_CROP_ROWS:
                raise TorsoError(f"{path} has more than {MAX_CROP_ROWS} rows")
            try:
                values = [float(row[k]) for k in want[1:]]
            except (TypeError, ValueError):
                raise TorsoError(f"{path} line {line}: numbers expected in {','.join(want[1:])}") from None
            t, x0, y0, x1, y1 = values
            if not all(math.isfinite(v) for v in values) or t < 0 or x1 <= x0 or y1 <= y0:
                raise TorsoError(f"{path} line {line}: a time >= 0 and a box with x1 > x0, y1 > y0 expected")
            name = Path(str(row["image"]).strip()).name
            out[name] = Crop(name, t, (x0, y0, x1, y1))
    return out


def neutral_frame(frames: list[FrameFiles]) -> FrameFiles:
    """The frame with expression, jaw and head turn closest to rest (see the module docstring)."""
    step = max(1, len(frames) // MAX_SCORED)
    picked = frames[::step]
    rows = []
    for f in picked:
        try:
            tf = load_tracker_frame(f.tracking)
        except TrackerFrameError:
            continue
        expr = 0.0 if tf.expr is None else float(np.linalg.norm(tf.expr))
        jaw = 0.0 if tf.jaw6 is None else float(np.linalg.norm(tf.jaw6 - JAW_REST))
        rows.append((f, expr + 5.0 * jaw, tf.R))
    if not rows:
        raise TorsoError("no readable tracker .frame in the dataset")
    usual = np.median(np.stack([r[2] for r in rows]), axis=0)
    def score(r: tuple[FrameFiles, float, np.ndarray]) -> float:
        turn = math.acos(max(-1.0, min(1.0, (float(np.trace(r[2] @ usual.T)) - 1.0) / 2.0)))
        return r[1] + 3.0 * turn
    return min(rows, key=score)[0]


def _read_grey(path: Path) -> NDArray[np.uint8]:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def video_frame_at(video: Path, time_s: float) -> NDArray[np.uint8]:
    """The video's frame shown at `time_s` (RGB), the container closed after."""
    import av

    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            base = float(stream.time_base) if stream.time_base is not None else 1.0 / 90_000
            if time_s > 1.0:
                container.seek(int(max(0.0, time_s - 1.0) / base), stream=stream)
            last = None
            for frame in container.decode(stream):
                t = float(frame.pts) * base if frame.pts is not None else 0.0
                last = frame
                if t + 0.5 * base >= time_s - 1e-3:
                    break
    except (av.error.FFmpegError, OSError, IndexError) as exc:  # type: ignore[attr-defined]
        raise TorsoError(f"cannot read {video} ({exc}); give the video the dataset was prepared from") from None
    if last is None:
        raise TorsoError(f"{video} has no frames")
    return np.asarray(last.to_ndarray(format="rgb24"), np.uint8)


def _place(mask: NDArray[np.uint8], box: tuple[float, float, float, float], shape: tuple[int, int]
           ) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """A crop-space mask resized into its box of the video frame; and where the box lies in the frame."""
    from PIL import Image

    h, w = shape
    x0, y0, x1, y1 = (round(v) for v in box)
    size = (max(1, x1 - x0), max(1, y1 - y0))
    scaled = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.BILINEAR))
    out = np.zeros((h, w), np.uint8)
    inside = np.zeros((h, w), bool)
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if fx1 > fx0 and fy1 > fy0:
        out[fy0:fy1, fx0:fx1] = scaled[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        inside[fy0:fy1, fx0:fx1] = True
    return out, inside


def person_alpha(frame: NDArray[np.uint8], alpha: NDArray[np.uint8], inside: NDArray[np.bool_]
                 ) -> NDArray[np.uint8]:
    """The dataset's alpha inside the crop box; outside it, distance from the background's colour (a ramp from
    BG_NEAR to BG_FAR standard deviations)."""
    pixels = frame.reshape(-1, 3).astype(np.float32)
    bg = pixels[(inside & (alpha < 10)).reshape(-1)]
    if len(bg) < 50:
        raise TorsoError("the crop shows almost no background to learn its colour from")
    mean, std = bg.mean(axis=0), bg.std(axis=0) + 4.0
    dist = np.sqrt((((pixels - mean) / std) ** 2).mean(axis=1)).reshape(frame.shape[:2])
    outside = np.clip((dist - BG_NEAR) / (BG_FAR - BG_NEAR), 0.0, 1.0)
    return np.where(inside, alpha, np.round(outside * 255.0)).astype(np.uint8)


def make_plate(dataset: Path, video: Path) -> tuple[TorsoPlate, FrameFiles, Crop]:
    """The plate from the dataset's most neutral frame (see the module docstring)."""
    layout = find_layout(dataset)
    frames = list_frames(layout)
    crops = read_crops(layout.root / "crops.csv")
    chosen = neutral_frame(frames)
    crop = crops.get(chosen.image.name)
    if crop is None:
        raise TorsoError(f"crops.csv has no row for {chosen.image.name}; prepare the dataset again")
    frame = video_frame_at(video, crop.time_s)
    shape = (frame.shape[0], frame.shape[1])
    alpha, inside = _place(_read_grey(chosen.alpha), crop.box, shape)
    neck, _ = _place(_read_grey(chosen.head_mask), crop.box, shape)
    person = person_alpha(frame, alpha, inside)
    return cut_plate(frame, person, neck >= 64), chosen, crop  # a generous mask: no soft head edge is kept
