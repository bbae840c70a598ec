"""Frames per second of the demo head on the CPU splatting renderers, per stage, at 256x256 and 512x512.

    python bench/bench_cpu_render.py [--sizes 256,512 | 256x256,320x240] [--frames 60] [--threads 2]
                                     [--renderer tiles,reference] [--device cpu|cuda|auto] [--repeat 3]
                                     [--compare [gsplat|reference]] [--no-cull] [--no-cold-compile]

Drives the head with a talking sequence (jaw, lids, gaze, head turn, expressions) and prints one row per
renderer, size and run: the median milliseconds of each stage (pose = rig + back-face culling, then the
renderer's own stages, then the uint8 conversion), the fps of the whole frame (median and mean over the
frames) and the process's CPU time per frame (all threads; on a busy machine the one figure that stays put).
The tile rasteriser's stages are project (incl. colours) / sort / bin / raster, the torch reference's
project / pairs / sort / composite; gsplat reports only the total. On a shared machine run it a few times (or
use --repeat): the best run is the machine's, the others include the neighbours.

The header says how long the tile kernels took to get ready in this process (compiled, or loaded from numba's
disk cache) and, unless --no-cold-compile, how long a compile from scratch takes (a child process with an
empty cache).

--compare renders every frame again with another renderer and prints the PSNR of the uint8 frames (min and
median) and the largest alpha difference: against gsplat on CUDA by default where CUDA is available, else
against the torch reference on the CPU; a last line says PASS or FAIL against --target dB. Imports only torch,
numpy, numba and our modules, so it runs on a bare machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.core.face_params import FaceParams  # noqa: E402
from drivers.avatar.demo.avatar import DEMO_EXPRESSION_CHANNELS, DemoAvatar  # noqa: E402
from drivers.avatar.splat.images import to_uint8  # noqa: E402

STAGES = {
    "tiles": ("project", "sort", "bin", "raster"),
    "cpu": ("project", "pairs", "sort", "composite"),  # the torch reference's name
}
RENDERER_CHOICES = ("tiles", "reference", "cpu", "auto", "gsplat")


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


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'256,512' or '256x256,320x240' → [(width, height), ...]."""
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        try:
            w, h = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        except (ValueError, IndexError):
            raise argparse.ArgumentTypeError(f"size {item!r} is not N or WIDTHxHEIGHT (e.g. 256 or 320x240)") from None
        if len(parts) > 2 or w < 1 or h < 1:
            raise argparse.ArgumentTypeError(f"size {item!r} is not N or WIDTHxHEIGHT (e.g. 256 or 320x240)")
        sizes.append((w, h))
    return sizes


def parse_renderers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in RENDERER_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"renderer {', '.join(bad) or text!r} is not one of {', '.join(RENDERER_CHOICES)}")
    return names


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of two images whose full scale is `peak` (1 for floats, 255 for uint8)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_size(width: int, height: int, frames: int, cull: bool, renderer: str, device: str,
               compare: DemoAvatar | None = None) -> dict[str, list[float]]:
    """Per-frame stage times (ms), visible Gaussians, and PSNR / alpha difference against `compare`."""
    avatar = DemoAvatar(width, height, renderer=renderer, device=device, cull_backfaces=cull)
    splat = avatar.renderer
    dev = avatar.device
    seq = talking_sequence(frames)
    times: dict[str, list[float]] = {"visible": [], "psnr": [], "alpha": []}
    avatar.render(seq[0])  # warm-up
    with torch.no_grad():
        for p in seq:
            _sync(dev)
            t0 = time.perf_counter()
            c0 = time.process_time()
            g = avatar.gaussians(p)
            _sync(dev)
            t1 = time.perf_counter()
            rgb, alpha = splat.render(g, avatar.camera, avatar.background, avatar.settings)
            _sync(dev)
            t2 = time.perf_counter()
            img = to_uint8(rgb)
            t3 = time.perf_counter()
            times.setdefault("cpu", []).append((time.process_time() - c0) * 1e3)
            times.setdefault("pose", []).append((t1 - t0) * 1e3)
            for k, v in getattr(splat, "timings", {}).items():
                times.setdefault(k, []).append(v)
            times.setdefault("convert", []).append((t3 - t2) * 1e3)
            times.setdefault("total", []).append((t3 - t0) * 1e3)
            times["visible"].append(float(len(g)))
            if compare is not None:
                # The same posed Gaussians, on the reference's device: only the rasterisers differ.
                rgb_ref, alpha_ref = compare.renderer.render(g.to(compare.device), compare.camera, compare.background,
                                                             compare.settings)
                ref = to_uint8(rgb_ref)
                times["psnr"].append(psnr(img, ref, 255.0))
                times["alpha"].append(float((alpha.float().cpu() - alpha_ref.float().cpu()).abs().max()))
    return times


def cold_compile_seconds() -> float | None:
    """Seconds the tile kernels take to compile from scratch: a child process with an empty numba cache."""
    code = ("from drivers.avatar.splat.tiles import TileSplatRenderer; r = TileSplatRenderer(); "
            "print(r.warmup_seconds, r.warmup_compiled)")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    try:
        seconds, compiled = out.stdout.split()
    except ValueError:
        return None
    return float(seconds) if compiled == "True" else None


def describe_tiles(cold: bool) -> str:
    from drivers.avatar.splat.tiles import TileSplatRenderer

    r = TileSplatRenderer()
    line = (f"tile kernels: ready in {r.warmup_seconds:.2f} s in this process "
            f"({'compiled' if r.warmup_compiled else 'loaded from the disk cache'})")
    if cold:
        s = cold_compile_seconds()
        line += f"; a compile from scratch takes {s:.2f} s" if s is not None else "; cold compile not measured"
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", type=parse_sizes, default=parse_sizes("256,512"),
                    help="comma-separated N or WIDTHxHEIGHT, e.g. 256,512 or 256x256,320x240")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for torch and numba (the target has 2 cores)")
    ap.add_argument("--no-cull", action="store_true", help="render every Gaussian, also those facing away")
    ap.add_argument("--repeat", type=int, default=1, help="runs per renderer and size; each is printed")
    ap.add_argument("--renderer", type=parse_renderers, default=["tiles", "reference"],
                    help=f"comma-separated, one row each: {', '.join(RENDERER_CHOICES)}")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--compare", nargs="?", const="auto", choices=("auto", "gsplat", "reference"), default=None,
                    help="PSNR of every frame against gsplat (CUDA) or the torch reference (auto: gsplat with CUDA)")
    ap.add_argument("--target", type=float, default=40.0, help="PSNR target of --compare (dB)")
    ap.add_argument("--no-cold-compile", action="store_true", help="skip timing a compile from an empty cache")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    cull = not args.no_cull
    n_total = len(DemoAvatar(64, 64, renderer="reference", device="cpu").model)
    print(f"demo head: {n_total} Gaussians; torch threads {torch.get_num_threads()}; back-face culling "
          f"{'on' if cull else 'off'}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if "tiles" in args.renderer or "cpu" in args.renderer or "auto" in args.renderer:
        print(describe_tiles(not args.no_cold_compile))
    ref_name = args.compare
    if ref_name == "auto":
        ref_name = "gsplat" if torch.cuda.is_available() else "reference"
    if ref_name is not None:
        print(f"comparing every frame against {ref_name} on {'cuda' if ref_name == 'gsplat' else 'cpu'}")
    worst = math.inf
    for name in args.renderer:
        probe = DemoAvatar(64, 64, renderer=name, device=args.device)
        stages = STAGES.get(probe.renderer.name, ())
        print(f"\nrenderer {name}: {probe.renderer.name} on {probe.device}")
        cols = ("pose", *stages, "convert")
        print("size        run" + "".join(f"{s:>10}" for s in cols) + f"{'total':>10}{'fps(med)':>10}"
              f"{'fps(mean)':>10}{'cpu ms':>8}   visible")
        for w, h in args.sizes:
            ref = None
            if ref_name is not None:
                ref_dev = "cuda" if ref_name == "gsplat" else "cpu"
                ref = DemoAvatar(w, h, renderer=ref_name, device=ref_dev, cull_backfaces=cull)
            for run in range(args.repeat):
                t = bench_size(w, h, args.frames, cull, name, args.device, ref)
                med = {k: statistics.median(v) if v else float("nan") for k, v in t.items()}
                mean_total = statistics.fmean(t["total"])
                line = (f"{f'{w}x{h}':<10}{run + 1:>5}" + "".join(f"{med[s]:>10.1f}" for s in cols)
                        + f"{med['total']:>10.1f}{1000 / med['total']:>10.1f}{1000 / mean_total:>10.1f}"
                        + f"{med['cpu']:>8.1f}   {int(med['visible'])}")
                if t["psnr"]:
                    worst = min(worst, min(t["psnr"]))
                    line += (f"   PSNR vs {ref_name} min {min(t['psnr']):.1f} dB, median {med['psnr']:.1f} dB, "
                             f"alpha max|diff| {max(t['alpha']):.4f}")
                print(line, flush=True)
    if ref_name is not None:
        ok = worst >= args.target
        print(f"\nworst PSNR vs {ref_name} {worst:.2f} dB: {'PASS' if ok else 'FAIL'} (target >= {args.target} dB)")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
