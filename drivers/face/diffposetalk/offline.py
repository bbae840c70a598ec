"""Whole-clip generation exactly as upstream's demo does it: z-score the clip, zero-pad (or replicate-pad) to
whole 100-frame windows, one HuBERT pass over everything, then non-overlapping windows carrying the last 10
frames of motion and audio features, window 0's initial noise reused for every window, padding dropped."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from drivers.face.diffposetalk.mapping import denormalise
from drivers.face.diffposetalk.model import DiffPoseTalkModel
from drivers.face.diffposetalk.sampler import DEFAULT_OPTIONS, NoiseFn, SamplerOptions, sample_window


@dataclass
class OfflineResult:
    motion: NDArray[np.float32]  # (L, D) normalised
    exp: NDArray[np.float32]  # (L, 50)
    pose: NDArray[np.float32]  # (L, 6)
    audio_feat: NDArray[np.float32]  # (n_windows * n_motions, F)
    n_windows: int
    n_pad_frames: int


def normalise_shape(shape: NDArray[np.floating], stats: dict[str, NDArray[np.float32]]) -> NDArray[np.float32]:
    return ((np.asarray(shape, np.float32) - stats["shape_mean"]) / stats["shape_std"]).astype(np.float32)


def window_plan(n_samples: int, fps: int, n_motions: int) -> tuple[int, int, int]:
    """(n_windows, n_padding_samples, n_padding_frames) as upstream computes them."""
    spf = 16000.0 / fps
    clip_len = int(n_samples / 16000 * fps)
    n_windows = 1 if clip_len <= n_motions else math.ceil(clip_len / n_motions)
    pad = round(spf * n_motions) * n_windows - n_samples
    return n_windows, pad, math.ceil(pad / spf)


@torch.no_grad()
def generate(model: DiffPoseTalkModel, audio: NDArray[np.floating], shape: NDArray[np.floating],
             style: NDArray[np.floating] | None, stats: dict[str, NDArray[np.float32]], noise: NoiseFn,
             opts: SamplerOptions = DEFAULT_OPTIONS, progress: bool = False) -> OfflineResult:
    args = model.args
    dev = model.device
    wav = torch.as_tensor(np.asarray(audio, np.float32), device=dev)
    if wav.ndim != 1 or wav.numel() < 2:
        raise ValueError("audio must be a 1-D array of 16 kHz samples (at least two)")
    wav = (wav - wav.mean()) / (wav.std() + 1e-5)
    n_windows, pad, n_pad_frames = window_plan(wav.numel(), args.fps, args.n_motions)
    if pad > 0:
        value = 0.0 if args.pad_mode == "zero" else float(wav[-1])
        wav = F.pad(wav, (0, pad), value=value)
    feats = model.audio_features(wav.unsqueeze(0), args.n_motions * n_windows)
    shape_t = torch.as_tensor(normalise_shape(shape, stats), device=dev).unsqueeze(0)
    style_t = None if style is None else torch.as_tensor(np.asarray(style, np.float32), device=dev).unsqueeze(0)
    prev_motion = prev_audio = x_T = None
    pieces = []
    windows = range(n_windows)
    if progress:
        from tqdm import tqdm

        windows = tqdm(windows, desc="windows", unit="win")
    for i in windows:
        a = feats[:, i * args.n_motions:(i + 1) * args.n_motions]
        ind = None
        if args.use_indicator:
            ind = torch.ones(1, args.n_motions, device=dev)
            if i == n_windows - 1 and n_pad_frames > 0:
                ind[:, -n_pad_frames:] = 0
        x0, x_T = sample_window(model, a, shape_t, style_t, prev_motion, prev_audio, x_T, ind, noise, opts)
        prev_motion = x0[:, -args.n_prev_motions:].clone()
        prev_audio = a[:, -args.n_prev_motions:]
        if i == n_windows - 1 and n_pad_frames > 0:
            x0 = x0[:, :-n_pad_frames]
        pieces.append(x0)
    motion = torch.cat(pieces, dim=1)[0].float().cpu().numpy()
    exp, pose = denormalise(motion, stats, args.predict_head_pose)
    return OfflineResult(motion, exp, pose, feats[0].float().cpu().numpy(), n_windows, n_pad_frames)
