"""The training data upstream FlashAvatar reads, found, checked and loaded into tensors.

Layout (upstream's `Scene_mica`):

    DATASET/imgs/NNNNN.jpg                 video frames (the tracker's 512x512 crops)
    DATASET/alpha/NNNNN.jpg                matting alpha (RobustVideoMatting)
    DATASET/parsing/NNNNN_neckhead.png     face-parsing masks (BiSeNet): head + neck,
    DATASET/parsing/NNNNN_mouth.png        and the mouth
    TRACKING/checkpoint/MMMMM.frame        metrical-tracker's per-frame FLAME + camera

Tracker frame `m` pairs with image `m + 1` (upstream's frame offset: the tracker starts on the video's second
frame). The held-out test frames are the last ones, as upstream's test.py takes them.

Everything is checked before training starts, and a problem names the frame, the file and what to do. The
images are kept as uint8 (H, W, 6) per frame - RGB, alpha, head mask, mouth mask - so a long video fits in
memory and the ground truth is composited on the device each step, exactly as upstream composites it.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bridge.core.errors import UserError
from bridge.core.rotations_torch import rotation_6d_to_matrix
from drivers.avatar.flame.tracker import TrackerFrame, TrackerFrameError, load_tracker_frame
from drivers.avatar.flashavatar.train.progress import QUIET, LoadProgress

log = logging.getLogger(__name__)

FRAME_OFFSET = 1  # upstream: tracker frame m <-> image m + 1
UPSTREAM_TEST_FRAMES = 500
UPSTREAM_MAX_TRAIN = 10000
SMALL_SET = 1000  # below this many frames the test split is a tenth of them instead of 500
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
CHANNELS = 6  # rgb, alpha, head mask, mouth mask
_FRAME_NAME = re.compile(r"^(\d+)\.frame$")


class DatasetError(UserError, ValueError):
    """The training dataset is incomplete or inconsistent; the message names the frame, the file and the fix."""


@dataclass
class DatasetLayout:
    root: Path
    images: Path
    alpha: Path
    parsing: Path
    tracking: Path  # the folder holding NNNNN.frame
    frame_offset: int = FRAME_OFFSET


@dataclass
class FrameFiles:
    index: int  # tracker frame number
    tracking: Path
    image: Path
    alpha: Path
    head_mask: Path
    mouth_mask: Path


def _tracking_candidates(root: Path) -> list[Path]:
    # metrical-tracker writes output/<actor>/checkpoint/; upstream keeps it at <repo>/metrical-tracker/output/<id>
    # beside <repo>/dataset/<id>.
    return [root / "checkpoint", root / "tracking" / "checkpoint", root / "tracking",
            root.parent.parent / "metrical-tracker" / "output" / root.name / "checkpoint"]


def find_layout(root: Path | str, tracking: Path | str | None = None, frame_offset: int = FRAME_OFFSET
                ) -> DatasetLayout:
    """The dataset's folders; raises DatasetError saying which one is missing and where it was looked for."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; give the folder that holds imgs/, alpha/ and "
                           "parsing/ (upstream's dataset/<id>)")
    for sub, what in (("imgs", "the video frames"), ("alpha", "the matting alpha (RobustVideoMatting)"),
                      ("parsing", "the face-parsing masks (*_neckhead.png, *_mouth.png)")):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root} has no {sub}/ folder with {what}; see install/models.md for the dataset "
                               "layout")
    if tracking is not None:
        t = Path(tracking).expanduser()
        if not t.is_dir():
            raise DatasetError(f"tracking folder {t} does not exist; give metrical-tracker's output/<id> folder")
        found = t / "checkpoint" if (t / "checkpoint").is_dir() else t
    else:
        cands = _tracking_candidates(root)
        hit = next((c for c in cands if c.is_dir() and any(c.glob("*.frame"))), None)
        if hit is None:
            raise DatasetError(f"no metrical-tracker .frame files found for {root} (looked in "
                               f"{', '.join(str(c) for c in cands[:3])}); pass --tracking "
                               "metrical-tracker/output/<id>")
        found = hit
    if not any(found.glob("*.frame")):
        raise DatasetError(f"{found} holds no .frame files; run metrical-tracker on the video first, or point "
                           "--tracking at its output/<id> folder")
    if frame_offset < 0:
        raise DatasetError(f"--frame-offset {frame_offset}: the offset between tracker frame and image numbers "
                           "cannot be negative")
    return DatasetLayout(root, root / "imgs", root / "alpha", root / "parsing", found, frame_offset)


def _first_existing(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{ext}" for ext in IMAGE_EXTS if (folder / f"{stem}{ext}").is_file()), None)


def list_frames(layout: DatasetLayout, progress: LoadProgress = QUIET) -> list[FrameFiles]:
    """Every tracker frame with its image, alpha and masks, in frame order. A frame the tracker skipped is
    skipped (with one warning); a tracked frame missing any image file is an error."""
    numbered: dict[int, Path] = {}
    if progress.say is not None:
        progress.say(f"finding the tracked frames in {layout.tracking}")
    for p in layout.tracking.iterdir():
        m = _FRAME_NAME.match(p.name)
        if m:
            numbered[int(m.group(1))] = p
    if not numbered:
        raise DatasetError(f"{layout.tracking} has no NNNNN.frame files")
    indices = sorted(numbered)
    gaps = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices))
    if gaps:
        shown = ", ".join(f"{g:05d}" for g in gaps[:5]) + (" ..." if len(gaps) > 5 else "")
        log.warning("%d tracker frames are missing (%s); those video frames are left out", len(gaps), shown)
    out: list[FrameFiles] = []
    with progress.stage("checking frame files", len(indices)) as stage:
        for i in indices:
            out.append(_frame_files(layout, i, numbered[i]))
            stage.advance()
    return out


def _frame_files(layout: DatasetLayout, i: int, tracking: Path) -> FrameFiles:
    """Tracker frame `i`'s image, alpha and masks; a missing one is a DatasetError naming it."""
    stem = f"{i + layout.frame_offset:05d}"
    image = _first_existing(layout.images, stem)
    if image is None:
        raise DatasetError(_missing_image(layout, i, stem))
    alpha = _first_existing(layout.alpha, stem)
    head = _first_existing(layout.parsing, f"{stem}_neckhead")
    mouth = _first_existing(layout.parsing, f"{stem}_mouth")
    for path, what, where, fix in (
        (alpha, "alpha matte", f"alpha/{stem}.jpg", "run RobustVideoMatting on the frames"),
        (head, "neck-and-head mask", f"parsing/{stem}_neckhead.png", "run face parsing (BiSeNet) on the frames"),
        (mouth, "mouth mask", f"parsing/{stem}_mouth.png", "run face parsing (BiSeNet) on the frames"),
    ):
        if path is None:
            raise DatasetError(f"frame {i:05d} ({layout.tracking.name}/{i:05d}.frame, image {image.name}) has "
                               f"no {what}: {layout.root / where} is missing; {fix}")
    assert alpha is not None and head is not None and mouth is not None
    return FrameFiles(i, tracking, image, alpha, head, mouth)


def _missing_image(layout: DatasetLayout, index: int, stem: str) -> str:
    msg = (f"tracker frame {index:05d} has no video frame {layout.images / stem}.jpg (tracker frame m pairs with "
           f"image m + {layout.frame_offset})")
    for other in (0, 1):
        if other != layout.frame_offset and _first_existing(layout.images, f"{index + other:05d}") is not None:
            n_img = sum(1 for p in layout.images.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            return msg + (f"; {n_img} images are numbered as if the offset were {other}: pass --frame-offset "
                          f"{other} if the tracker started on the same frame as the images")
    return msg + "; export every video frame into imgs/ as upstream's preprocessing does"


@dataclass
class Tracking:
    """Per-frame conditions and cameras, as upstream reads them (shape and intrinsics from the first frame)."""

    cond: torch.Tensor  # (F,120) expr 100, jaw 6D, eyes 2x6D, eyelids 2
    R: torch.Tensor  # (F,3,3) OpenCV world->camera
    t: torch.Tensor  # (F,3)
    shape: np.ndarray  # (300,)
    first: TrackerFrame  # frame 0: shape, K and the tracker's image size

    def viewmats(self) -> torch.Tensor:
        v = torch.eye(4).repeat(self.R.shape[0], 1, 1)
        v[:, :3, :3] = self.R
        v[:, :3, 3] = self.t
        return v


def _conditions(f: FrameFiles, first: bool) -> tuple[TrackerFrame, np.ndarray]:
    """Tracker frame `f` and its (120,) condition; a missing part or a non-finite value names the file."""
    try:
        tf = load_tracker_frame(f.tracking)
    except TrackerFrameError as exc:
        raise DatasetError(f"frame {f.index:05d}: {exc}") from None
    parts = {"exp": tf.expr, "jaw": tf.jaw6, "eyes": tf.eyes12, "eyelids": tf.eyelids}
    missing = [k for k, v in parts.items() if v is None] + (["shape"] if first and tf.shape is None else [])
    if missing:
        raise DatasetError(f"{f.tracking} lacks flame.{', flame.'.join(missing)}: FlashAvatar needs metrical-"
                           "tracker's expression, jaw, eyes, eyelids (and the shape in the first frame); "
                           "track the video with metrical-tracker")
    cond = np.concatenate([parts["exp"], parts["jaw"], parts["eyes"], parts["eyelids"]]).astype(np.float32)
    if not np.all(np.isfinite(cond)) or not np.all(np.isfinite(tf.R)) or not np.all(np.isfinite(tf.t)):
        raise DatasetError(f"{f.tracking} contains NaN or infinite values; the tracker lost this frame: "
                           "delete the frame's files or re-track")
    return tf, cond


def load_tracking(frames: list[FrameFiles], progress: LoadProgress = QUIET) -> Tracking:
    conds, rs, ts = [], [], []
    first: TrackerFrame | None = None
    with progress.stage("reading tracker frames", len(frames)) as stage:
        for f in frames:
            tf, cond = _conditions(f, first is None)
            conds.append(cond)
            rs.append(tf.R)
            ts.append(tf.t)
            if first is None:
                first = tf
            stage.advance()
    assert first is not None and first.shape is not None
    cond_t = torch.as_tensor(np.stack(conds))
    # 6D rotations must be usable (two independent vectors), or FLAME's Gram-Schmidt divides by zero.
    six = cond_t[:, 100:118].reshape(-1, 3, 6)
    bad = ~torch.isfinite(rotation_6d_to_matrix(six)).reshape(len(frames), -1).all(dim=1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise DatasetError(f"{frames[i].tracking}: flame.jaw or flame.eyes is not a valid 6D rotation")
    return Tracking(cond_t, torch.as_tensor(np.stack(rs), dtype=torch.float32),
                    torch.as_tensor(np.stack(ts), dtype=torch.float32), first.shape, first)


def split(n: int, test_frames: int | None = None) -> tuple[list[int], list[int]]:
    """Upstream's split: the last 500 frames are held out, training uses the first min(10000, rest). Below
    1000 frames a tenth (at least one) is held out instead, so short clips keep most frames for training."""
    if n < 2:
        raise DatasetError(f"the dataset has {n} tracked frame(s); training needs at least 2 (one is held out)")
    if test_frames is None:
        test_frames = UPSTREAM_TEST_FRAMES if n >= SMALL_SET else max(1, n // 10)
    if not 1 <= test_frames < n:
        raise DatasetError(f"--test-frames {test_frames}: give 1 to {n - 1} for this {n}-frame dataset")
    train = list(range(min(UPSTREAM_MAX_TRAIN, n - test_frames)))
    return train, list(range(n - test_frames, n))


def _read(path: Path, mode: str, source_hw: tuple[int, int], target_hw: tuple[int, int], frame: int
          ) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size != (source_hw[1], source_hw[0]):
                raise DatasetError(f"frame {frame:05d}: {path} is {im.size[0]}x{im.size[1]} but the video frames "
                                   f"are {source_hw[1]}x{source_hw[0]}; every image, alpha and mask must have the "
                                   "frames' size")
            pixels = im.convert(mode)
            if pixels.size != (target_hw[1], target_hw[0]):
                pixels = pixels.resize((target_hw[1], target_hw[0]), Image.Resampling.BILINEAR)
            return np.asarray(pixels, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"frame {frame:05d}: {path} cannot be read as an image ({type(exc).__name__}: "
                           f"{str(exc)[:100]}); export it again") from None


def image_size(frames: list[FrameFiles]) -> tuple[int, int]:
    """(height, width) of the first video frame."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(frames[0].image) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{frames[0].image} cannot be read as an image ({exc}); export it again") from None


def load_frame(f: FrameFiles, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> np.ndarray:
    """One frame as uint8 (H, W, 6) at the training size; every file must have the video's size."""
    out = np.empty((*target_hw, CHANNELS), np.uint8)
    for path, mode, sl in ((f.image, "RGB", slice(0, 3)), (f.alpha, "L", slice(3, 4)),
                           (f.head_mask, "L", slice(4, 5)), (f.mouth_mask, "L", slice(5, 6))):
        out[..., sl] = _read(path, mode, source_hw, target_hw, f.index).reshape(*target_hw, -1)
    return out


def load_images(frames: list[FrameFiles], target_hw: tuple[int, int], workers: int = 4,
                progress: LoadProgress = QUIET) -> torch.Tensor:
    """All frames as one uint8 tensor (F, H, W, 6) on the CPU, decoded on a few threads."""
    source_hw = image_size(frames)
    data = torch.empty(len(frames), *target_hw, CHANNELS, dtype=torch.uint8)
    with progress.stage("decoding frames", len(frames)) as stage, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, arr in enumerate(pool.map(lambda f: load_frame(f, source_hw, target_hw), frames)):
            data[i] = torch.from_numpy(arr)
            stage.advance()
    return data


def target_size(source_hw: tuple[int, int], size: int | None) -> tuple[int, int]:
    """Training (height, width): `size` rows, the width keeping the frames' aspect; None keeps the frames'."""
    if size is None:
        return source_hw
    if not 16 <= size <= 4096:
        raise DatasetError(f"--size {size}: give a training height between 16 and 4096 pixels (upstream: 512)")
    h, w = source_hw
    return size, max(1, round(w * size / h))


class FrameStore:
    """The frames' uint8 pixels where training reads them fastest: on the device when they fit comfortably
    (`budget` of its free memory), else in pinned host memory, copied up one frame per step."""

    def __init__(self, data: torch.Tensor, device: torch.device, budget: float = 0.4) -> None:
        self.device = device
        self.on_device = device.type != "cuda" or data.numel() < budget * torch.cuda.mem_get_info(device)[0]
        self.data = data.to(device) if self.on_device else data.pin_memory()

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])

    def get(self, index: int) -> torch.Tensor:
        """Frame `index` as uint8 (H, W, 6) on the device."""
        frame = self.data[index]
        return frame if self.on_device else frame.to(self.device, non_blocking=True)


def ground_truth(frame: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upstream's target from a uint8 (H, W, 6) frame: the image over `background` by the matte, then again by
    the neck-and-head mask (shoulders and clothes removed). Returns (gt (H,W,3), head (H,W,1), mouth (H,W,1))."""
    x = frame.float() * (1.0 / 255.0)
    rgb, alpha, head, mouth = x[..., :3], x[..., 3:4], x[..., 4:5], x[..., 5:6]
    gt = torch.lerp(background, rgb, alpha)  # rgb * alpha + bg * (1 - alpha)
    return torch.lerp(background, gt, head), head, mouth
