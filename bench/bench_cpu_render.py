"""Frames per second of the demo head on the CPU splatting renderer, per stage, at 256x256 and 512x512.

    python bench/bench_cpu_render.py [--sizes 256,512] [--frames 60] [--threads 2] [--no-cull] [--repeat 3]
                                     [--renderer cpu|gsplat|auto] [--device cpu|cuda|auto] [--compare]

Drives the head with a talking sequence (jaw, lids, gaze, head turn, expressions) and prints, per size, the
median milliseconds of each stage (pose = rig + back-face culling, then the renderer's project / pairs / sort /
composite, then the uint8 conversion) and the fps of the whole frame (median and mean over the frames). On a
shared machine run it a few times (or use --repeat): the best run is the machine's, the others include the
neighbours. With --renderer/--device the same table is printed for another backend (gsplat reports only the
total), and --compare prints the PSNR of each frame against the CPU renderer on the CPU. Imports only torch,
numpy and our modules, so it runs on a bare machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.core.face_params import FaceParams  # noqa: E402
from drivers.avatar.demo.avatar import DEMO_EXPRESSION_CHANNELS, DemoAvatar  # noqa: E402

STAGES = ("pose", "project", "pairs", "sort", "composite", "convert")


def talking_sequence(n: int, fps: float = 25.0) -> list[FaceParams]:
    """A deterministic sequence that moves every rig channel a little, as a speaking head does."""
    out = []
    ch = DEMO_EXPRESSION_CHANNELS
    for i in range(n):
        t = i / fps
        p = FaceParams.neutral(pts=t)
        p.jaw[0] = max(0.0, 0.17 + 0.15 * np.sin(t * 9.0))
        p.head[:] = (0.05 * np.sin(t * 0.9), 0.25 * np.sin(t * 1.3), 0.04 * np.sin(t * 0.7))
        p.eyes[:] = [0.08 * np.sin(t * 0.5), 0.2 * np.sin(t * 0.8), 0.0]
        p.eyelids[:] = 1.0 if i % 40 in (0, 1) else 0.0
        p.expression[ch["smile"]] = 0.5 + 0.5 * np.sin(t * 0.6)
        p.expression[ch["brow_raise"]] = max(0.0, np.sin(t * 1.1))
        p.expression[ch["pucker"]] = max(0.0, np.sin(t * 2.3)) * 0.6
        out.append(p)
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_size(size: int, frames: int, cull: bool, renderer: str = "cpu", device: str = "cpu",
               compare: bool = False) -> dict[str, list[float]]:
    avatar = DemoAvatar(size, size, renderer=renderer, device=device, cull_backfaces=cull)
    ref = DemoAvatar(size, size, renderer="cpu", device="cpu", cull_backfaces=cull) if compare else None
    splat = avatar.renderer
    dev = avatar.device
    seq = talking_sequence(frames)
    times: dict[str, list[float]] = {k: [] for k in (*STAGES, "total", "visible", "psnr")}
    avatar.render(seq[0])  # warm-up
    with torch.no_grad():
        for p in seq:
            _sync(dev)
            t0 = time.perf_counter()
            g = avatar.gaussians(p)
            _sync(dev)
            t1 = time.perf_counter()
            rgb, _alpha = splat.render(g, avatar.camera, avatar.background, avatar.settings)
            _sync(dev)
            t2 = time.perf_counter()
            img = (rgb.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
            t3 = time.perf_counter()
            times["pose"].append((t1 - t0) * 1e3)
            for k, v in getattr(splat, "timings", {}).items():
                times[k].append(v)
            times["convert"].append((t3 - t2) * 1e3)
            times["total"].append((t3 - t0) * 1e3)
            times["visible"].append(float(len(g)))
            if ref is not None:
                mse = float(np.mean((img.astype(np.float64) - ref.render(p).rgb.astype(np.float64)) ** 2))
                times["psnr"].append(10 * np.log10(255.0**2 / max(mse, 1e-10)))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    ap.add_argument("--no-cull", action="store_true", help="render every Gaussian, also those facing away")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size; each is printed")
    ap.add_argument("--renderer", default="cpu", choices=("cpu", "gsplat", "auto"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--compare", action="store_true", help="PSNR of every frame against the CPU renderer on the CPU")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_total = len(DemoAvatar(64, 64, renderer="cpu", device="cpu").model)
    probe = DemoAvatar(64, 64, renderer=args.renderer, device=args.device)
    print(f"demo head: {n_total} Gaussians; renderer {probe.renderer.name} on {probe.device}; torch threads "
          f"{torch.get_num_threads()}; back-face culling {'off' if args.no_cull else 'on'}")
    header = "size      run  " + "".join(f"{s:>10}" for s in STAGES) + f"{'total':>10}{'fps(med)':>10}{'fps(mean)':>10}"
    print(header + "   visible")
    print(" " * 15 + "".join(f"{'ms':>10}" for _ in STAGES) + f"{'ms':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        for run in range(args.repeat):
            t = bench_size(size, args.frames, not args.no_cull, args.renderer, args.device, args.compare)
            med = {k: statistics.median(v) if v else float("nan") for k, v in t.items()}
            mean_total = statistics.fmean(t["total"])
            print(f"{size}x{size:<6}{run + 1:>3}  " + "".join(f"{med[s]:>10.1f}" for s in STAGES)
                  + f"{med['total']:>10.1f}{1000 / med['total']:>10.1f}{1000 / mean_total:>10.1f}"
                  + f"   {int(med['visible'])}"
                  + (f"   PSNR vs CPU min {min(t['psnr']):.1f} dB, median {med['psnr']:.1f} dB" if t["psnr"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
