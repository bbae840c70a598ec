"""Render the golden FlashAvatar at 512x512 with gsplat (CUDA) and with the CPU splatting renderer from the
same Gaussians and camera, and print per-frame PSNR (target >= 40 dB) and the max absolute difference.

    python bench/compare_gsplat_cpu.py [--golden DIR] [--size 512] [--save DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN, GREEN, build_avatar, golden_params, renderer

from drivers.avatar.splat.gaussians import RasterSettings


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cpu-device", default="cpu", help="device the CPU renderer runs on (its code is device-agnostic)")
    ap.add_argument("--save", type=Path, help="write side-by-side PNG-free .npy pairs here")
    ap.add_argument("--target", type=float, default=40.0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("compare_gsplat_cpu: CUDA is not available; gsplat needs a GPU. Nothing to compare.")
        return 0
    gs = renderer("gsplat", "cuda")
    cpu = renderer("cpu", "cpu")
    avatar = build_avatar(args.golden, args.size, args.size, "cuda", gs, mlp_precision="fp32", cuda_graph=False)
    settings = RasterSettings(eps2d=0.3)
    bg = torch.tensor(GREEN)
    print(f"gsplat renderer: {type(gs).__module__}.{type(gs).__name__}; CPU renderer: {type(cpu).__module__}."
          f"{type(cpu).__name__} on {args.cpu_device}; {avatar.model.ckpt.num_gaussians} Gaussians, "
          f"{args.size}x{args.size}, near {avatar.base_camera.near}, eps2d 0.3, green background")
    worst = math.inf
    print(f"{'frame':>5} {'PSNR dB':>9} {'max|diff|':>10} {'max|diff| u8':>13} {'alpha max|diff|':>16} {'coverage':>9}")
    for i, params in enumerate(golden_params(args.golden)):
        g, cam = avatar.gaussians(params)
        with torch.no_grad():
            rgb_g, a_g = gs.render(g, cam, bg.cuda(), settings)
            gc = g.to(args.cpu_device)
            cam_c = type(cam)(cam.viewmat.to(args.cpu_device), cam.K.to(args.cpu_device), cam.width, cam.height,
                              cam.near, cam.far)
            rgb_c, a_c = cpu.render(gc, cam_c, bg.to(args.cpu_device), settings)
        x = rgb_g.clamp(0, 1).float().cpu().numpy()
        y = rgb_c.clamp(0, 1).float().cpu().numpy()
        p = psnr(x, y)
        worst = min(worst, p)
        u8 = np.abs((x * 255 + 0.5).astype(np.int16) - (y * 255 + 0.5).astype(np.int16)).max()
        ad = float(np.abs(a_g.float().cpu().numpy() - a_c.float().cpu().numpy()).max())
        cov = float((a_g.float().cpu().numpy() > 0.5).mean())
        print(f"{i:>5} {p:>9.2f} {np.abs(x - y).max():>10.4f} {u8:>13d} {ad:>16.4f} {cov:>9.3f}")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            np.save(args.save / f"frame{i}_gsplat.npy", x)
            np.save(args.save / f"frame{i}_cpu.npy", y)
    ok = worst >= args.target
    print(f"worst PSNR {worst:.2f} dB: {'PASS' if ok else 'FAIL'} (target >= {args.target} dB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
