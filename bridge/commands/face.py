"""`avatar-bridge face generate`: DiffPoseTalk coefficients for an audio file, as upstream's demo makes them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def register(subparsers: Any) -> None:
    face = subparsers.add_parser("face", help="face drivers (DiffPoseTalk offline generation)")
    sub = face.add_subparsers(dest="face_command", metavar="ACTION")
    gen = sub.add_parser("generate", help="audio file → FLAME coefficients (.npz with exp, pose, shape)")
    gen.add_argument("--checkpoint", type=Path, required=True, help="DiffPoseTalk denoiser iter_*.pt")
    gen.add_argument("--stats", type=Path, required=True, help="stats_train.npz belonging to the checkpoint")
    gen.add_argument("--audio", type=Path, required=True, help="any audio file PyAV/FFmpeg can decode")
    gen.add_argument("--shape", type=Path, required=True, help="FLAME shape .npy (100,) or .npz with 'shape'")
    gen.add_argument("--style", type=Path, default=None, help="128-d style .npy (omit for the null style)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm",
                     help="ddpm: upstream's exact sampler over all steps; ddim: deterministic, --steps steps")
    gen.add_argument("--steps", type=int, default=50, help="DDIM step count (ignored by ddpm)")
    gen.add_argument("--cfg-audio", type=float, default=1.15)
    gen.add_argument("--cfg-style", type=float, default=3.0)
    gen.add_argument("--dynamic-threshold", type=float, default=0.0,
                     help="dynamic threshold ratio (e.g. 0.99; 0 = off), clamped to [1, 4] as upstream")
    gen.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    gen.add_argument("--out", type=Path, required=True, help="output .npz")
    gen.set_defaults(func=generate_command)
    face.set_defaults(func=lambda _args: face.print_help() or 2)


def decode_audio(path: Path) -> NDArray[np.float32]:
    """Decode any audio file to 16 kHz mono float32 (UserError for a missing, unreadable or too short file)."""
    from bridge.core.errors import UserError
    from drivers.audio.decode import decode_audio as decode

    audio = decode(path)
    if audio.size < 16000 // 25:
        raise UserError(f"{path}: the audio is shorter than one video frame (40 ms); give a longer recording")
    return audio


def generate_command(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from bridge.cli import UserError
    from drivers.face.diffposetalk.checkpoint import (
        CheckpointError,
        load_checkpoint,
        load_shape,
        load_stats,
        load_style,
    )
    from drivers.face.diffposetalk.model import DiffPoseTalkModel
    from drivers.face.diffposetalk.offline import generate
    from drivers.face.diffposetalk.sampler import SamplerOptions, torch_noise

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device auto or cpu")
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    audio = decode_audio(args.audio)
    bar = tqdm(total=4, desc="loading DiffPoseTalk", unit="step")
    try:
        bar.set_postfix_str("reading checkpoint")
        ckpt = load_checkpoint(args.checkpoint)
        bar.update()

        def progress(msg: str) -> None:
            bar.set_postfix_str(msg)
            bar.update()

        model = DiffPoseTalkModel.from_checkpoint(ckpt, device, progress=progress)
        stats = load_stats(args.stats)
        shape = load_shape(args.shape)
        style = load_style(args.style, ckpt.args.d_style) if args.style is not None else None
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    finally:
        bar.close()
    if style is not None and not ckpt.args.use_style:
        raise UserError("this checkpoint takes no style vector; omit --style")
    conds = tuple(c for c in ckpt.args.guiding_conditions if c != "style" or style is not None)
    scales = tuple(args.cfg_audio if c == "audio" else args.cfg_style for c in conds)
    opts = SamplerOptions(kind=args.sampler, steps=args.steps, cfg_cond=conds, cfg_scale=scales,
                          dynamic_threshold=(args.dynamic_threshold, 1.0, 4.0) if args.dynamic_threshold > 0 else None)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    result = generate(model, audio, shape, style, stats, torch_noise(gen, device), opts, progress=True)
    n = result.exp.shape[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, exp=result.exp, pose=result.pose, shape=np.repeat(shape[None], n, axis=0),
                        fps=np.int64(ckpt.args.fps))
    print(f"wrote {args.out}: {n} frames at {ckpt.args.fps} fps ({n / ckpt.args.fps:.2f} s) on {device}")
    return 0
