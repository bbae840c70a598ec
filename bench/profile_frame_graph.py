"""Where a FlashAvatar frame's time goes on CUDA: host packing, one graph replay (GPU time), the copies, and
the kernels of one frame (torch profiler over an eager run of the same work).

    python bench/profile_frame_graph.py --size 512x512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN, build_avatar, golden_params, renderer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--frames", type=int, default=500)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    av = build_avatar(args.golden, w, h, "cuda", renderer("gsplat", "cuda"))
    fg = av._frame_graph
    if fg is None:
        print("no frame graph on this machine")
        return 1
    frames = golden_params(args.golden)
    n = args.frames
    for p in frames * 20:
        av.render(p)
    t0 = time.perf_counter()
    for i in range(n):
        av.pack(frames[i % len(frames)])
    pack_ms = (time.perf_counter() - t0) * 1e3 / n
    t0 = time.perf_counter()
    for i in range(n):
        av._upload(frames[i % len(frames)])
    upload_ms = (time.perf_counter() - t0) * 1e3 / n
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fg.replay()
    end.record()
    end.synchronize()
    replay_gpu = start.elapsed_time(end) / n
    t0 = time.perf_counter()
    for i in range(n):
        av.render(frames[i % len(frames)])
    serial = (time.perf_counter() - t0) * 1e3 / n
    print(f"{w}x{h}: capacity {fg.capacity}; pack {pack_ms:.3f} ms, pack+upload {upload_ms:.3f} ms (host), "
          f"graph replay {replay_gpu:.3f} ms (GPU, back to back), serial render() {serial:.3f} ms = "
          f"{1000 / serial:.0f} fps")
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            fg._frame(fg._slots)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
