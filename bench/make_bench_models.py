"""Model files for the GPU benchmarks, made where they run, so that only small files have to travel there.

Writes into --out:
- `diffposetalk/dpt_release_head.pt` + `stats_head.npz`: a DiffPoseTalk denoiser checkpoint in the upstream
  training format (`{'args': Namespace, 'model': state_dict, 'iter'}`) at the released head-pose model's sizes
  (HuBERT-base front end, 8 layers x 8 heads x 512 denoiser, 500 diffusion steps), random weights. Its compute
  is a released checkpoint's compute, which the golden tiny checkpoint's is not.
- `flashavatar/`: the golden FlashAvatar checkpoint's small files (copied from --golden-fa), with the stand-in
  FLAME (real structure, built on FlameMesh.obj) as `flame_synthetic.npz` when the golden folder has no FLAME
  file small enough to ship.

    python bench/make_bench_models.py --out /tmp/models --golden-fa .golden/flashavatar
    python bench/bench_sessions.py --golden-fa /tmp/models/flashavatar \\
        --dpt-checkpoint /tmp/models/diffposetalk/dpt_release_head.pt --dpt-stats /tmp/models/diffposetalk/stats_head.npz
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN  # (puts the checkout on the path)

FA_FILES = ("chkpnt_seed0.pth", "FLAME_masks_synthetic.pkl", "FlameMesh.obj", "l_eyelid.npy", "r_eyelid.npy",
            "golden_seed0.npz")
RELEASE_NAME = "dpt_release_head.pt"


def write_release_size_dpt(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random-weight denoiser checkpoint with the released head-pose model's sizes, and neutral statistics."""
    import argparse as ap

    import torch
    from bench_diffposetalk import real_size_args

    from drivers.face.diffposetalk.checkpoint import STATS_SIZES
    from drivers.face.diffposetalk.model import DiffPoseTalkModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    a = real_size_args()
    model = DiffPoseTalkModel(a)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    args = ap.Namespace(
        architecture="decoder", audio_model="hubert", rot_repr="aa", feature_dim=a.feature_dim, n_heads=a.n_heads,
        n_layers=a.n_layers, mlp_ratio=a.mlp_ratio, n_motions=a.n_motions, n_prev_motions=a.n_prev_motions,
        fps=a.fps, n_diff_steps=a.n_diff_steps, diff_schedule=a.diff_schedule, target=a.target,
        style_enc_ckpt="style_encoder.pt", d_style=a.d_style, use_indicator=a.use_indicator,
        align_mask_width=a.align_mask_width, no_use_learnable_pe=False, no_head_pose=not a.predict_head_pose,
        guiding_conditions=",".join(a.guiding_conditions), cfg_mode=a.cfg_mode, pad_mode=a.pad_mode)
    ckpt = folder / RELEASE_NAME
    torch.save({"args": args, "model": state, "iter": 0}, ckpt)
    stats = folder / "stats_head.npz"
    np.savez(stats, **{f"{name}_{kind}": (np.zeros(n, np.float32) if kind == "mean" else np.ones(n, np.float32))
                       for name, n in STATS_SIZES.items() for kind in ("mean", "std")})
    return ckpt, stats


def write_flashavatar(src: Path, folder: Path) -> Path:
    """The golden FlashAvatar's files, with a FLAME model: the golden one when present, else the stand-in."""
    from _avatar_common import golden_flame_model

    folder.mkdir(parents=True, exist_ok=True)
    for name in FA_FILES:
        shutil.copyfile(src / name, folder / name)
    flame = golden_flame_model(src)
    if flame.is_file():
        shutil.copyfile(flame, folder / flame.name)
    else:
        from drivers.avatar.flashavatar.create.synthetic_flame import build_synthetic_flame

        np.savez(folder / "flame_synthetic.npz", **build_synthetic_flame(folder / "FlameMesh.obj"))
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--golden-fa", type=Path, default=DEFAULT_GOLDEN, help="the golden FlashAvatar folder")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    ckpt, stats = write_release_size_dpt(args.out / "diffposetalk")
    print(f"wrote {ckpt} ({ckpt.stat().st_size / 2**20:.0f} MiB) and {stats} in {time.perf_counter() - t0:.1f} s")
    fa = write_flashavatar(args.golden_fa, args.out / "flashavatar")
    print(f"wrote {fa} ({', '.join(sorted(f.name for f in fa.iterdir()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
