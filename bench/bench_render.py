"""Frames per second of FlashAvatar's full render path (FaceParams in → uint8 RGB in host memory out) with the
golden avatar's size, at 512x512 and 1920x1080, and the time per stage: FLAME, MLP, the fused deformation
step as the avatar runs it (CUDA graph on GPUs), rasterisation, and uint8 conversion + pinned host copy.

    python bench/bench_render.py                       # CUDA when present (targets: >=1000 fps @512, >=300 @1080p)
    python bench/bench_render.py --device cpu --frames 3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN, GREEN, build_avatar, golden_params, renderer

TARGETS = {(512, 512): 1000.0, (1920, 1080): 300.0}


def timed(fn: Callable[[], object], n: int, cuda: bool, warmup: int = 3) -> float:
    """Mean milliseconds per call (CUDA events around the batch, synchronised)."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / n
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) * 1e3 / n


def bench_size(args: argparse.Namespace, width: int, height: int) -> dict[str, float]:
    cuda = args.device == "cuda"
    splat = renderer(args.renderer, args.device)
    avatar = build_avatar(args.golden, width, height, args.device, splat, mlp_precision=args.precision,
                          cuda_graph=not args.no_graph)
    model = avatar.model
    frames = golden_params(args.golden)
    n = args.frames
    k = [0]

    def next_params():  # type: ignore[no-untyped-def]
        k[0] += 1
        return frames[k[0] % len(frames)]

    frame = model.frame_from_arrays(frames[1].expression, frames[1].to_6d()["jaw"], frames[1].to_6d()["eyes"],
                                    frames[1].eyelids)
    cond = model.condition(frame)
    bg = torch.tensor(GREEN, device=args.device)
    out: dict[str, float] = {}
    with torch.no_grad():
        out["flame"] = timed(lambda: model.sample(model.pose_vertices(frame)), n, cuda)
        out["mlp"] = timed(lambda: model.deform(cond), n, cuda)
        out["deform"] = timed(lambda: avatar.gaussians(next_params()), n, cuda)
        g, cam = avatar.gaussians(frames[1])
        out["raster"] = timed(lambda: splat.render(g, cam, bg, avatar.settings), n, cuda)
        rgb, _ = splat.render(g, cam, bg, avatar.settings)
        out["convert"] = timed(lambda: avatar._to_host((rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)), n, cuda)
        for _ in range(5):
            avatar.render(next_params())
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            img = avatar.render(next_params())
        if cuda:
            torch.cuda.synchronize()
        out["total"] = (time.perf_counter() - t0) * 1e3 / n
    assert img.rgb.shape == (height, width, 3)
    info = avatar.info()
    print(f"  {width}x{height}: {info['gaussians']} Gaussians, renderer {info['renderer']}, MLP {info['mlp_dtype']}, "
          f"CUDA graph {info['cuda_graph']}")
    avatar.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--renderer", default=None, help="cpu | gsplat (default: gsplat on CUDA, cpu otherwise)")
    ap.add_argument("--sizes", default="512x512,1920x1080")
    ap.add_argument("--frames", type=int, default=0, help="timed iterations per stage (default 500 CUDA, 2 CPU)")
    ap.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto")
    ap.add_argument("--no-graph", action="store_true", help="run the deformation eagerly (no CUDA graph)")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.renderer = args.renderer or ("gsplat" if args.device == "cuda" else "cpu")
    args.frames = args.frames or (500 if args.device == "cuda" else 2)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    dev_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"FlashAvatar render benchmark on {dev_name}, torch {torch.__version__}, {args.frames} iterations per stage")
    rows = []
    for w, h in sizes:
        rows.append(((w, h), bench_size(args, w, h)))
    print(f"{'size':>10} {'FLAME':>8} {'MLP':>8} {'deform*':>8} {'raster':>8} {'u8+copy':>8} {'total ms':>9} {'fps':>8}")
    ok = True
    for (w, h), r in rows:
        fps = 1000.0 / r["total"]
        target = TARGETS.get((w, h))
        verdict = "" if target is None or args.device != "cuda" else ("  PASS" if fps >= target else "  FAIL") + \
            f" (target {target:.0f})"
        ok &= not verdict.startswith("  FAIL")
        print(f"{w}x{h:<5} {r['flame']:>8.3f} {r['mlp']:>8.3f} {r['deform']:>8.3f} {r['raster']:>8.3f} "
              f"{r['convert']:>8.3f} {r['total']:>9.3f} {fps:>8.1f}{verdict}")
    print("ms per frame; FLAME and MLP measured eagerly on their own; deform* = pack + upload + FLAME + MLP + "
          "Gaussian parameters as the avatar runs them (one CUDA graph replay on GPUs); total = full render()")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
