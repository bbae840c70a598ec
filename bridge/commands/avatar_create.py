"""`avatar-bridge avatar create` and `avatar prepare`: from a phone video to a FlashAvatar dataset, and on to a
trained avatar with its avatar.toml and a preview.

Heavy imports (torch, mediapipe, PyAV) happen inside the commands so `avatar-bridge --help` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.core.errors import UserError


def register(avsub: Any, flame_args: Callable[[argparse.ArgumentParser], None],
             subject_paths: Callable[[argparse.Namespace], Any]) -> None:
    """Add `create` and `prepare` to the `avatar` command's sub-commands; the FLAME file options and their
    resolution are `avatar train`'s, handed over by the `avatar` command."""
    prep = avsub.add_parser("prepare", help="make a FlashAvatar dataset from a phone video (frames, masks, FLAME "
                            "tracking, report)", description="Turn VIDEO into a dataset in upstream FlashAvatar's "
                            "layout (imgs/, alpha/, parsing/, checkpoint/*.frame, crops.csv, report/) that "
                            "`avatar train` reads. Every stage is resumable: run it again after a stop.")
    _common(prep, flame_args)
    prep.set_defaults(func=cmd_prepare, subject_paths=subject_paths)

    create = avsub.add_parser("create", help="make a trained avatar from a phone video, in one command",
                              description="Prepare VIDEO into OUT/dataset, train a FlashAvatar into OUT "
                              "(checkpoints, avatar.toml) and write OUT/preview.mp4. Resumable: run it again "
                              "after a stop.")
    _common(create, flame_args)
    create.add_argument("--iterations", type=int, help="training iterations (default: 15000 on CUDA, 200 on the "
                        "CPU, which only checks the pipeline)")
    create.add_argument("--size", type=int, default=512, help="training image height (upstream: 512)")
    create.add_argument("--mlp-width", type=int, default=256, help="deformation MLP width (upstream: 256)")
    create.add_argument("--mlp-layers", type=int, default=6, help="deformation MLP hidden layers (upstream: 6)")
    create.add_argument("--mlp-init", choices=("upstream", "zero"), default="upstream",
                        help="zero: the deformation starts at none (for small MLPs), as `avatar train` has it")
    create.add_argument("--no-lpips", action="store_true", help="leave out the LPIPS(VGG) loss after 15k iterations")
    create.add_argument("--style-checkpoint", type=Path, help="DiffPoseTalk's style-encoder checkpoint: also "
                        "write your speaking style (style.npy) next to the avatar")
    create.add_argument("--style-stats", type=Path, help="the stats_train.npz the style encoder was trained with "
                        "(needed with --style-checkpoint)")
    create.add_argument("--preview-frames", type=int, help="frames in preview.mp4 (default: all)")
    create.add_argument("--no-progress", action="store_true", help="no training progress bar")
    create.set_defaults(func=cmd_create, subject_paths=subject_paths)


def _common(p: argparse.ArgumentParser, flame_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p.add_argument("video", type=Path, help="the video of your face (mp4/mov from a phone)")
    p.add_argument("--out", type=Path, required=True, help="output folder (create: e.g. models/me)")
    flame_args(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="cuda for tracking and training on the GPU; cpu works, slowly")
    p.add_argument("--max-seconds", type=float, help="use only the first seconds of the video")


def _files(args: argparse.Namespace) -> Any:
    """The FLAME files, after checking that the `create` extra is installed (the first thing a user must fix)."""
    from drivers.avatar.flashavatar.create.landmarks import solutions

    solutions()
    return args.subject_paths(args)


def cmd_prepare(args: argparse.Namespace) -> int:
    from drivers.avatar.flashavatar.create.create import resolve_device
    from drivers.avatar.flashavatar.create.prepare import PrepareOptions, prepare

    res = prepare(args.video, args.out, PrepareOptions(_files(args), device=resolve_device(args.device),
                                                       max_seconds=args.max_seconds))
    print(f"dataset: {res.dataset} ({res.images} images, {res.tracked} tracked; face mesh found in "
          f"{res.detection_rate * 100:.1f} % of frames at {res.ms_per_frame:.1f} ms/frame)")
    print(f"report:  {res.report}")
    print(f"train:   avatar-bridge avatar train {res.dataset} --out models/me --flame-model ...")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from drivers.avatar.flashavatar.create.create import CreateOptions, create

    if args.style_checkpoint is not None:  # checked before hours of work, not after
        from drivers.avatar.flashavatar.create.style import load_encoder
        from drivers.face.diffposetalk.checkpoint import load_stats

        if args.style_stats is None:
            raise UserError("--style-checkpoint needs --style-stats: the stats_train.npz its encoder was trained "
                            "with (DiffPoseTalk's datasets/HDTF_TFHP/lmdb/stats_train.npz)")
        load_encoder(args.style_checkpoint)
        load_stats(args.style_stats)
    opts = CreateOptions(_files(args), device=args.device, iterations=args.iterations, size=args.size,
                         mlp_width=args.mlp_width, mlp_layers=args.mlp_layers, zero_head=args.mlp_init == "zero",
                         lpips=not args.no_lpips,
                         style_checkpoint=args.style_checkpoint,
                         style_stats=args.style_stats, preview_frames=args.preview_frames,
                         progress=not args.no_progress, max_seconds=args.max_seconds)
    res = create(args.video, args.out, opts)
    print(f"avatar:  {res.avatar_toml}  ->  avatar-bridge run --config {res.avatar_toml}")
    print(f"preview: {res.preview}")
    print(f"report:  {res.dataset.report}")
    if res.style is not None:
        print(f"style:   {res.style}")
    return 0
