"""What a training run leaves in its output folder, and reading it back to resume.

- `chkpnt<iteration>.pth`: upstream's exact tuple `((mlp_state, mlp_adam_state), gaussian_capture, iteration)`
  with the 12-entry Gaussian capture (active SH degree, last frame's positions, the five parameters, three
  zero buffers, the Gaussian Adam state with upstream's five named groups, spatial_lr_scale 0), so upstream's
  test.py restores it as it restores its own. Written to a temporary file and renamed: a crash or Ctrl-C never
  leaves a half-written checkpoint.
- `avatar.toml`: the `[avatar]` section for the daemon (paths relative to the file for what is in the folder).
- `preview/NNNNNN.jpg`: ground truth | render | difference.
- `metrics.csv`: held-out PSNR/SSIM per evaluation; `train_log.csv`: the loss over training.
- `training.toml`: fingerprints of the dataset and the FLAME files the run trains on. A folder holding an avatar
  is only trained into again with `--resume` (and then only from the same dataset and FLAME files: weights
  continued on another subject would be silently wrong) or `--overwrite` (which removes the old checkpoints, so a
  later `--resume` cannot pick up one of them).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.core.errors import UserError
from drivers.avatar.flashavatar.checkpoint import (
    CheckpointError,
    FlashAvatarCheckpoint,
    parse_checkpoint,
    read_checkpoint_file,
)
from drivers.avatar.splat.images import to_uint8

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CHECKPOINT_RE = re.compile(r"^chkpnt(\d+)\.pth$")
DIFF_GAIN = 4.0  # the preview's difference panel shows |GT - render| x 4


def checkpoint_path(out: Path, iteration: int) -> Path:
    return out / f"chkpnt{iteration}.pth"


def latest_checkpoint(out: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in out.glob("chkpnt*.pth") if (m := CHECKPOINT_RE.match(p.name))]
    return max(found)[1] if found else None


def gaussian_capture(model: Any, positions: torch.Tensor, optimizer_state: dict[str, Any]) -> tuple[Any, ...]:
    """Upstream's `GaussianModel.capture()` tuple for a `TrainableAvatar`."""
    n, dev = model.num_gaussians, model.features_dc.device
    return (
        int(model.active_sh_degree),
        positions.detach().clone(),  # _xyz: the last training frame's positions (unused when rendering)
        model.features_dc,
        model.features_rest,
        model.scaling_base,
        model.rotation_base,
        model.opacity,
        torch.zeros(n, device=dev),  # max_radii2D
        torch.zeros(n, 1, device=dev),  # xyz_gradient_accum
        torch.zeros(n, 1, device=dev),  # denom
        optimizer_state,
        0,  # spatial_lr_scale
    )


def save_checkpoint(path: Path, model: Any, mlp_optimizer: torch.optim.Optimizer,
                    gaussian_optimizer: torch.optim.Optimizer, positions: torch.Tensor, iteration: int) -> Path:
    """Write upstream's checkpoint tuple atomically (temporary file in the same folder, then rename)."""
    payload = ((model.mlp.state_dict(), mlp_optimizer.state_dict()),
               gaussian_capture(model, positions, gaussian_optimizer.state_dict()), int(iteration))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class ResumeState:
    checkpoint: FlashAvatarCheckpoint
    mlp_optimizer: dict[str, Any]
    gaussian_optimizer: dict[str, Any]
    path: Path


def read_resume_state(path: Path) -> ResumeState:
    """A checkpoint to continue from: validated by the inference loader (safe, shapes checked), plus the two
    optimiser states training needs."""
    raw = read_checkpoint_file(path)
    ckpt = parse_checkpoint(raw, path)
    mlp_opt, gauss_opt = raw[0][1], raw[1][10]
    for name, state in (("MLP", mlp_opt), ("Gaussian", gauss_opt)):
        if not (isinstance(state, dict) and "state" in state and "param_groups" in state):
            raise CheckpointError(f"{path} has no {name} optimiser state, so training cannot continue from it; "
                                  "start a new run without --resume")
    if ckpt.iteration < 0:
        raise CheckpointError(f"{path} does not say which iteration it was saved at; start a new run")
    return ResumeState(ckpt, mlp_opt, gauss_opt, path)


@dataclass
class SubjectFilePaths:
    """The FLAME-side files a trained avatar needs at run time (the same ones it was trained with)."""

    flame_model: Path
    flame_masks: Path
    flame_mesh: Path
    eyelids_dir: Path


TRAINING_RECORD = "training.toml"
AVATAR_FILES = ("avatar.toml",)  # with chkpnt*.pth: what makes a folder an avatar (a record alone does not)


class OutputFolderError(UserError, ValueError):
    """`--out` is not a folder this run may write: a file, or another avatar without --resume/--overwrite."""


def _file_digest(path: Path, into: Any) -> None:
    into.update(f"{path.name}|{path.stat().st_size}|".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            into.update(chunk)


@dataclass(frozen=True)
class TrainingFingerprint:
    """What a run trains on, as two digests: the dataset (its tracked frame numbers and the first, middle and
    last tracker files, which carry the subject's shape and camera) and the FLAME files (their bytes)."""

    dataset: str
    flame: str

    @classmethod
    def of(cls, tracking: Sequence[tuple[int, Path]], files: SubjectFilePaths) -> TrainingFingerprint:
        data = hashlib.sha256(",".join(str(i) for i, _ in tracking).encode())
        for _index, path in (tracking[0], tracking[len(tracking) // 2], tracking[-1]) if tracking else ():
            _file_digest(path, data)
        flame = hashlib.sha256()
        for path in (files.flame_model, files.flame_masks, files.flame_mesh,
                     files.eyelids_dir / "l_eyelid.npy", files.eyelids_dir / "r_eyelid.npy"):
            _file_digest(path, flame)
        return cls(dataset=data.hexdigest()[:32], flame=flame.hexdigest()[:32])

    def write(self, out: Path) -> Path:
        target = out / TRAINING_RECORD
        tmp = target.with_name(f".{TRAINING_RECORD}.tmp")
        tmp.write_text("# Written by `avatar-bridge avatar train`: what this avatar was trained on; --resume checks"
                       f" it.\n[training]\ndataset = \"{self.dataset}\"\nflame = \"{self.flame}\"\n",
                       encoding="utf-8")
        os.replace(tmp, target)
        return target

    @classmethod
    def read(cls, out: Path) -> TrainingFingerprint | None:
        try:
            section = tomllib.loads((out / TRAINING_RECORD).read_text(encoding="utf-8")).get("training", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        dataset, flame = section.get("dataset"), section.get("flame")
        if not (isinstance(dataset, str) and isinstance(flame, str)):
            return None
        return cls(dataset, flame)


def avatar_files(out: Path) -> list[Path]:
    """The files in `out` that make it an avatar (checkpoints, avatar.toml)."""
    if not out.is_dir():
        return []
    found = sorted(p for p in out.glob("chkpnt*.pth") if CHECKPOINT_RE.match(p.name))
    return found + [out / name for name in AVATAR_FILES if (out / name).is_file()]


def check_output_folder(out: Path, resume: bool, overwrite: bool,
                        fingerprint: TrainingFingerprint | None = None) -> None:
    """Refuse an `--out` that is a file, or that holds an avatar when neither --resume nor --overwrite is given;
    with --resume and a `fingerprint`, refuse an avatar trained on another dataset or other FLAME files."""
    if resume and overwrite:
        raise OutputFolderError("--resume continues the avatar in --out and --overwrite replaces it: give one")
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file, not a folder; give a folder for the avatar (it is created "
                                "if missing)")
    held = avatar_files(out)
    if held and not (resume or overwrite):
        names = ", ".join(p.name for p in held[:4]) + (", ..." if len(held) > 4 else "")
        raise OutputFolderError(f"--out {out} already holds an avatar ({names}); continue it with --resume, "
                                "replace it with --overwrite, or give another folder")
    if not (resume and held and fingerprint is not None):
        return
    recorded = TrainingFingerprint.read(out)
    if recorded is None:
        raise OutputFolderError(f"--resume: {out} has no readable {TRAINING_RECORD}, so nothing says which dataset "
                                "and FLAME files its checkpoints belong to; start over with --overwrite")
    for what, mine, theirs in (("a different dataset", fingerprint.dataset, recorded.dataset),
                               ("different FLAME files", fingerprint.flame, recorded.flame)):
        if mine != theirs:
            raise OutputFolderError(f"--resume: the avatar in {out} was trained on {what}; give the ones it was "
                                    "trained on, or start over with --overwrite or another --out")


def take_output_folder(out: Path, fingerprint: TrainingFingerprint, overwrite: bool) -> None:
    """Make the (checked) `out` this run's: with --overwrite the old avatar's checkpoints and records go first, so
    no later --resume continues from them; then `training.toml` records what this run trains on."""
    if overwrite:
        for path in avatar_files(out):
            path.unlink()
        (out / TRAINING_RECORD).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint.write(out)


def write_avatar_toml(out: Path, checkpoint: Path, files: SubjectFilePaths, tracker_frame: Path,
                      background: tuple[float, float, float]) -> Path:
    """`avatar.toml` with a ready `[avatar]` section; the tracker's first frame is copied beside it (it carries
    the subject's shape and camera), so the folder is the avatar."""
    import tomli_w

    frame_copy = out / "00000.frame"
    if tracker_frame.resolve() != frame_copy.resolve():
        shutil.copyfile(tracker_frame, frame_copy)
    section = {
        "kind": "flashavatar",
        "checkpoint": checkpoint.name,
        "tracker_frame": frame_copy.name,
        "flame_model": str(files.flame_model.resolve()),
        "flame_masks": str(files.flame_masks.resolve()),
        "flame_mesh": str(files.flame_mesh.resolve()),
        "eyelids_dir": str(files.eyelids_dir.resolve()),
        "background": list(background),
    }
    text = ("# Written by `avatar-bridge avatar train`: this avatar's [avatar] section. Paths without a folder are\n"
            "# relative to this file. Run it with:  avatar-bridge run --config " + str(out / "avatar.toml") + "\n"
            "# or copy the section into your own config. It was trained against this background colour.\n\n")
    target = out / "avatar.toml"
    tmp = target.with_name(".avatar.toml.tmp")
    tmp.write_text(text + tomli_w.dumps({"avatar": section}), encoding="utf-8")
    os.replace(tmp, target)
    return target


def write_preview(path: Path, gt: torch.Tensor, render: torch.Tensor) -> Path:
    """Ground truth | render | |difference| × 4, side by side, as a JPEG."""
    from PIL import Image

    diff = ((render.detach().clamp(0.0, 1.0) - gt).abs() * DIFF_GAIN)
    strip = np.concatenate([to_uint8(gt), to_uint8(render), to_uint8(diff)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(path, quality=92)
    return path


class CsvLog:
    """Append rows to a CSV file (header written once), flushed per row so a stopped run keeps them."""

    def __init__(self, path: Path, header: list[str], fresh: bool) -> None:
        self.path = path
        if fresh or not path.is_file():
            with open(path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(header)

    def add(self, *row: Any) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
