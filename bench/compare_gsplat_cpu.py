"""Render the same Gaussians with gsplat (CUDA) and with a CPU splatting renderer, and print per-frame PSNR
(target >= 40 dB), the largest differences and a PASS/FAIL line: for the demo head (a talking sequence) and the
golden FlashAvatar (its frames plus head turns), at each size.

    python bench/compare_gsplat_cpu.py [--renderer tiles|reference] [--against auto|gsplat|reference]
                                       [--avatars demo,flashavatar] [--sizes 256,512] [--golden DIR] [--save DIR]

--renderer is the CPU renderer under test (default: the compiled tile rasteriser). --against is what it is
compared with: gsplat on CUDA (auto picks it where CUDA is available), or the torch reference rasteriser on
the CPU (what a machine without CUDA can check). Both renderers get identical Gaussians and camera: the posed
Gaussians are made once per frame and copied to each renderer's device. The golden avatar is skipped, with a
line saying so, when its files are absent.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN, GREEN, build_avatar, golden_params, renderer
from bench_cpu_render import parse_sizes, psnr, talking_sequence

from drivers.avatar.splat.gaussians import Camera, Gaussians


def on(g: Gaussians, cam: Camera, device: str) -> tuple[Gaussians, Camera]:
    return g.to(device), Camera(cam.viewmat.to(device), cam.K.to(device), cam.width, cam.height, cam.near, cam.far)


def demo_frames(width: int, height: int, n: int) -> Iterator[tuple[Gaussians, Camera, Any, torch.Tensor]]:
    from drivers.avatar.demo.avatar import DemoAvatar

    av = DemoAvatar(width, height, renderer="reference", device="cpu", background=(0.2, 0.3, 0.4))
    for p in talking_sequence(n):
        yield av.gaussians(p), av.camera, av.settings, av.background


def golden_frames(golden: Path, width: int, height: int, device: str
                  ) -> Iterator[tuple[Gaussians, Camera, Any, torch.Tensor]]:
    av = build_avatar(golden, width, height, device, renderer("reference", device), mlp_precision="fp32",
                      cuda_graph=False)
    for p in golden_params(golden):
        g, cam = av.gaussians(p)
        yield g, cam, av.settings, torch.tensor(GREEN)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--renderer", default="tiles", choices=("tiles", "reference", "cpu"),
                    help="the CPU renderer under test")
    ap.add_argument("--against", default="auto", choices=("auto", "gsplat", "reference"))
    ap.add_argument("--avatars", default="demo,flashavatar")
    ap.add_argument("--sizes", type=parse_sizes, default=parse_sizes("256,512"))
    ap.add_argument("--frames", type=int, default=8, help="demo head frames per size")
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    ap.add_argument("--save", type=Path, help="write each pair of frames here as .npy")
    ap.add_argument("--target", type=float, default=40.0)
    args = ap.parse_args(argv)
    against = args.against
    if against == "auto":
        against = "gsplat" if torch.cuda.is_available() else "reference"
        if against == "reference":
            print("compare_gsplat_cpu: no CUDA here, so gsplat cannot run; comparing against the torch reference "
                  "rasteriser on the CPU instead (run this on a CUDA machine for the gsplat figures)")
    ref_dev = "cuda" if against == "gsplat" else "cpu"
    ref = renderer(against, ref_dev)
    cut = renderer(args.renderer, "cpu")
    print(f"under test: {type(cut).__module__}.{type(cut).__name__} ({cut.name}) on cpu; reference: "
          f"{type(ref).__module__}.{type(ref).__name__} ({ref.name}) on {ref_dev}")
    print(f"{'avatar':<12}{'size':>10}{'frame':>6} {'PSNR dB':>9} {'max|diff|':>10} {'max|diff| u8':>13} "
          f"{'alpha max|diff|':>16} {'coverage':>9}")
    worst: dict[str, float] = {}
    skipped: list[str] = []
    for kind in (a.strip() for a in args.avatars.split(",") if a.strip()):
        if kind == "flashavatar" and not (args.golden / "chkpnt_seed0.pth").is_file():
            print(f"{kind:<12} skipped: no golden avatar in {args.golden} (--golden DIR)")
            skipped.append(kind)
            continue
        if kind not in ("demo", "flashavatar"):
            print(f"{kind:<12} skipped: not an avatar this script knows (demo, flashavatar)")
            skipped.append(kind)
            continue
        for w, h in args.sizes:
            frames = demo_frames(w, h, args.frames) if kind == "demo" else golden_frames(args.golden, w, h, ref_dev)
            for i, (g, cam, settings, bg) in enumerate(frames):
                with torch.no_grad():
                    gr, cr = on(g, cam, ref_dev)
                    rgb_r, a_r = ref.render(gr, cr, bg.to(ref_dev), settings)
                    gc, cc = on(g, cam, "cpu")
                    rgb_c, a_c = cut.render(gc, cc, bg.cpu(), settings)
                x = rgb_r.clamp(0, 1).float().cpu().numpy()
                y = rgb_c.clamp(0, 1).float().cpu().numpy()
                p = psnr(x, y)
                worst[kind] = min(worst.get(kind, math.inf), p)
                u8 = np.abs((x * 255 + 0.5).astype(np.int16) - (y * 255 + 0.5).astype(np.int16)).max()
                ar, ac = a_r.float().cpu().numpy(), a_c.float().cpu().numpy()
                print(f"{kind:<12}{f'{w}x{h}':>10}{i:>6} {p:>9.2f} {np.abs(x - y).max():>10.4f} {u8:>13d} "
                      f"{float(np.abs(ar - ac).max()):>16.4f} {float((ar > 0.5).mean()):>9.3f}", flush=True)
                if args.save:
                    args.save.mkdir(parents=True, exist_ok=True)
                    np.save(args.save / f"{kind}_{w}x{h}_frame{i}_{against}.npy", x)
                    np.save(args.save / f"{kind}_{w}x{h}_frame{i}_{args.renderer}.npy", y)
    for kind, value in worst.items():
        print(f"{kind}: worst PSNR {value:.2f} dB")
    low = min(worst.values(), default=-math.inf)
    ok = low >= args.target and not skipped
    print(f"{args.renderer} vs {against}: worst PSNR {low:.2f} dB over {', '.join(worst) or 'nothing'}"
          + (f" ({', '.join(skipped)} not compared)" if skipped else "")
          + f": {'PASS' if ok else 'FAIL'} (target >= {args.target} dB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
