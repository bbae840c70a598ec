"""Do FlashAvatar frames of many sessions that fall due in one tick render faster together?

N live avatars share one golden model (as sessions do). Per tick, each renders its own frame:
- live: each avatar's `render` in turn (on CUDA one frame-graph replay per frame, its own buffers);
- batched: the offline path, `offline.render_batch` of the N frames with each session's view (one deformation
  pass and, with gsplat, one rasterisation call for all).
Prints the wall time per tick of both (median over --ticks, after warm-up) and their ratio.

    python bench/bench_render_batch.py --sessions 1,8,16,32                # CUDA, 512²
    python bench/bench_render_batch.py --device cpu --size 64 --sessions 1,4 --ticks 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import (  # (puts the checkout on the path)
    DEFAULT_GOLDEN,
    GREEN,
    golden_flame_model,
    golden_params,
)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", default="1,8,16,32")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--ticks", type=int, default=50)
    p.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    args = p.parse_args(argv)
    import torch

    from bridge.core.models import ModelCache
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
    from drivers.avatar.flashavatar.offline import render_batch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    g = args.golden
    shape = np.load(g / "golden_seed0.npz")["shape"]
    models = ModelCache()
    poses = golden_params(g)
    counts = [int(x) for x in args.sessions.split(",")]
    avatars: list[FlashAvatarAvatar] = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    print(f"bench_render_batch: {args.size}² on {device}, {args.ticks} ticks per N")
    print(f"{'N':>4}{'live ms/tick':>14}{'batched ms/tick':>17}{'batched/live':>14}")
    for n in counts:
        while len(avatars) < n:
            avatars.append(FlashAvatarAvatar(
                checkpoint=g / "chkpnt_seed0.pth", flame_model=golden_flame_model(g),
                flame_masks=g / "FLAME_masks_synthetic.pkl", flame_mesh=g / "FlameMesh.obj", eyelids_dir=g,
                shape=shape, width=args.size, height=args.size, device=device, background=GREEN, models=models))
        group = avatars[:n]
        views = torch.stack([a.base_camera.viewmat.detach().cpu() for a in group])
        live, batched = [], []
        for tick in range(args.ticks + 3):
            frame = [poses[(tick + i) % len(poses)] for i in range(n)]
            sync()
            t0 = time.perf_counter()
            for a, params in zip(group, frame):
                a.render(params)
            sync()
            t1 = time.perf_counter()
            render_batch(group[0], frame, views)
            sync()
            t2 = time.perf_counter()
            if tick >= 3:
                live.append(t1 - t0)
                batched.append(t2 - t1)
        lm, bm = statistics.median(live) * 1000, statistics.median(batched) * 1000
        print(f"{n:>4}{lm:>14.2f}{bm:>17.2f}{bm / lm:>14.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
