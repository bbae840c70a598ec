"""Your speaking style: DiffPoseTalk's style encoder run over the video's tracked motion, saved as `style.npy`.

The encoder (upstream's `models/style_encoder.py`, reproduced from its description) takes 100 frames (4 s at
25 fps) of FLAME motion normalised by the training statistics: 50 expression coefficients, the head's global
rotation (3, head-pose encoders only) and the jaw's opening (the x rotation; y and z are dropped). A linear
projection, plus the one sinusoid row `pe[T]` added to every frame (upstream indexes its table by the sequence
length, so the encoder ignores frame order), a post-norm transformer encoder (GELU), and the mean over time give
the style vector that DiffPoseTalk's denoiser takes. Sizes come from the checkpoint's stored arguments and its
tensors, so any trained encoder loads. The motion here is our own tracking: the head's rotation is the camera
rotation turned into FLAME's axes, as a head-pose tracker reports it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bridge.core.errors import UserError
from drivers.face.diffposetalk.checkpoint import load_stats
from drivers.face.diffposetalk.denoiser import sinusoid_table
from drivers.safe_load import ARGPARSE_PATHS, RefusedContent, SafeLoadError, load_torch

if TYPE_CHECKING:
    from drivers.avatar.flashavatar.create.tracking import TrackingResult

N_EXP = 50
# OpenCV camera axes (x right, y down, z ahead) → FLAME's (x right, y up, z towards the viewer)
FLIP = np.diag([1.0, -1.0, -1.0])


class StyleError(UserError, ValueError):
    """A style-encoder checkpoint or statistics file that cannot be used."""


@dataclass(frozen=True)
class EncoderArgs:
    motion_dim: int  # 54 with head pose, 51 without
    no_head_pose: bool
    feature_dim: int
    n_heads: int
    n_layers: int
    mlp_ratio: int
    n_motions: int


class StyleEncoder(nn.Module):
    """Motion (B, T, motion_dim) → style (B, feature_dim); parameter names match upstream's `encoder` dict."""

    def __init__(self, a: EncoderArgs) -> None:
        super().__init__()
        self.args = a
        layer = nn.TransformerEncoderLayer(d_model=a.feature_dim, nhead=a.n_heads,
                                           dim_feedforward=a.mlp_ratio * a.feature_dim, dropout=0.0,
                                           activation="gelu", batch_first=True)
        self.motion_proj = nn.Linear(a.motion_dim, a.feature_dim)
        self.transformer = nn.TransformerEncoder(layer, num_layers=a.n_layers, enable_nested_tensor=False)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        t = motion.shape[1]
        pe = sinusoid_table(t + 1, self.args.feature_dim)[t].to(motion)
        return self.transformer(self.motion_proj(motion) + pe).mean(dim=1)


def load_encoder(path: Path) -> StyleEncoder:
    """A style-encoder checkpoint (`{'args', 'encoder', 'iter'}` as upstream's main_se.py saves it), safely."""
    if not path.is_file():
        raise StyleError(f"--style-checkpoint {path} does not exist; give DiffPoseTalk's style-encoder "
                         "iter_*.pt (experiments/SE/<name>/checkpoints/)")
    try:
        data = load_torch(path, allow=ARGPARSE_PATHS)
    except RefusedContent as exc:
        raise StyleError(f"{path}: refused to load: it holds objects other than tensors, argparse.Namespace and "
                         f"pathlib paths ({exc.reason}); use a style-encoder checkpoint from a source you trust"
                         ) from None
    except SafeLoadError as exc:
        raise StyleError(f"{path}: not a readable PyTorch checkpoint ({exc.reason}); download it again") from None
    if not isinstance(data, dict) or "encoder" not in data or "args" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise StyleError(f"{path}: not a DiffPoseTalk style-encoder checkpoint (expected 'args' and 'encoder', "
                         f"found {found}); a denoiser iter_*.pt is not the style encoder")
    ns = vars(data["args"]) if isinstance(data["args"], argparse.Namespace) else data["args"]
    state = data["encoder"]
    if not isinstance(ns, dict) or not isinstance(state, dict) or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StyleError(f"{path}: 'args' or 'encoder' is not what DiffPoseTalk saves; use its style encoder")
    if ns.get("rot_repr", "aa") != "aa":
        raise StyleError(f"{path}: rotation representation {ns.get('rot_repr')!r}; only 'aa' exists upstream")
    proj = state.get("motion_proj.weight")
    if proj is None or proj.ndim != 2:
        raise StyleError(f"{path}: the encoder has no motion_proj.weight; use DiffPoseTalk's style encoder")
    no_head = bool(ns.get("no_head_pose", False))
    n_layers = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("transformer.layers.")), default=-1)
    a = EncoderArgs(motion_dim=int(proj.shape[1]), no_head_pose=no_head, feature_dim=int(proj.shape[0]),
                    n_heads=int(ns.get("n_heads") or 4), n_layers=n_layers,
                    mlp_ratio=int(ns.get("mlp_ratio") or 4), n_motions=int(ns.get("n_motions") or 100))
    if a.motion_dim != N_EXP + (1 if no_head else 4) or a.feature_dim % a.n_heads or n_layers < 1:
        raise StyleError(f"{path}: sizes do not agree (motion {a.motion_dim}, no_head_pose {no_head}, width "
                         f"{a.feature_dim}, {a.n_heads} heads, {n_layers} layers); the file is damaged")
    model = StyleEncoder(a)
    try:
        model.load_state_dict({str(k): v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise StyleError(f"{path}: the encoder's tensors do not fit ({str(exc)[:160]}); the file is damaged"
                         ) from None
    return model.eval()


def motion_input(exp: np.ndarray, pose: np.ndarray, stats: dict[str, np.ndarray], no_head_pose: bool
                 ) -> np.ndarray:
    """Upstream's packing: exp (T,50) and pose (T,6) = [global 3, jaw 3] normalised, jaw y/z dropped."""
    e = (exp - stats["exp_mean"]) / stats["exp_std"]
    p = (pose - stats["pose_mean"]) / stats["pose_std"]
    motion = np.concatenate([e, p[:, 3:] if no_head_pose else p], axis=1)
    return motion[:, :-2].astype(np.float32)


def encode(model: StyleEncoder, exp: np.ndarray, pose: np.ndarray, stats: dict[str, np.ndarray], start: int = 0
           ) -> np.ndarray:
    """The style vector (feature_dim,) of frames [start, start + n_motions), as upstream's extract_style.py."""
    sl = slice(start, start + model.args.n_motions)
    motion = motion_input(exp[sl], pose[sl], stats, model.args.no_head_pose)
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.as_tensor(motion, device=dev)[None])[0]
    return out.cpu().numpy().astype(np.float32)


def tracked_motion(tracking: TrackingResult) -> tuple[np.ndarray, np.ndarray]:
    """DiffPoseTalk's coefficients from our tracking: exp (F,50), pose (F,6) = [head rotation, jaw]."""
    from scipy.spatial.transform import Rotation

    head = Rotation.from_matrix(FLIP @ tracking.R.astype(np.float64)).as_rotvec()
    pose = np.concatenate([head, tracking.jaw.astype(np.float64)], axis=1).astype(np.float32)
    return tracking.expression[:, :N_EXP].astype(np.float32), pose


def best_start(valid: np.ndarray, n: int) -> int:
    """The first window of n frames that are all tracked (or the one with the most tracked frames)."""
    if len(valid) <= n:
        return 0
    counts = np.convolve(valid.astype(np.int64), np.ones(n, np.int64), mode="valid")
    return int(np.argmax(counts))


def write_style(checkpoint: Path, stats_path: Path, tracking: TrackingResult, out: Path, device: str = "cpu"
                ) -> Path:
    """Encode the tracked motion and write `out/style.npy`; avatar.toml gets [face.diffposetalk] style."""
    from drivers.avatar.flashavatar.create.stages import atomic_path, write_text

    model = load_encoder(checkpoint).to(device)
    try:
        stats = load_stats(stats_path)
    except UserError as exc:
        raise StyleError(f"--style-stats: {exc}") from None
    exp, pose = tracked_motion(tracking)
    vec = encode(model, exp, pose, stats, best_start(tracking.valid, model.args.n_motions))
    path = out / "style.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, vec)
    toml = out / "avatar.toml"
    text = toml.read_text(encoding="utf-8") if toml.is_file() else ""
    if "[face.diffposetalk]" not in text:
        text += ("\n# Your speaking style for DiffPoseTalk (made from this video by its style encoder): used when\n"
                 "# [face] driver = \"diffposetalk\" and the denoiser was trained with the same style encoder.\n"
                 "[face.diffposetalk]\nstyle = \"style.npy\"\n")
        write_text(toml, text)
    return path

