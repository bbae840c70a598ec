"""A competing GPU workload at a stated duty cycle: what a game or OBS's encoder does to the avatar's GPU.

Every period (default 100 ms) it keeps the GPU busy for `duty` of it with back-to-back matrix products, then
leaves it idle for the rest. It measures the busy share it achieved (the GPU time of its bursts over the
wall time) and prints it when it stops.

    python bench/gpu_load.py --duty 0.7                 # its own process, until Ctrl-C or --seconds
    python bench/gpu_load.py --duty 0.7 --seconds 60

Another process shares the GPU by time slices (unless the machine runs MPS): CUDA stream priorities order
kernels within one process only. `CompetingLoad` runs the same load on a thread of the calling process, on a
normal-priority stream, which is the case the avatar's high-priority streams can win (bench_sessions
--competing-where thread).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

DEFAULT_PERIOD_S = 0.1
DEFAULT_SIZE = 4096  # a product of two 4096² fp16 matrices: well under a millisecond of an H100 per kernel


class CompetingLoad:
    """Bursts of matrix products on `device` for `duty` of every `period_s` (see the module docstring)."""

    def __init__(self, duty: float, device: str = "cuda", period_s: float = DEFAULT_PERIOD_S,
                 size: int = DEFAULT_SIZE) -> None:
        if not 0.0 < duty < 1.0:
            raise ValueError("--duty must be between 0 and 1 (e.g. 0.7 for a GPU 70 % busy)")
        self.duty, self.period_s, self.size, self.device = duty, period_s, size, device
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy_s = 0.0
        self.wall_s = 0.0

    def start(self) -> CompetingLoad:
        self._thread = threading.Thread(target=self._run, name="competing-gpu-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stop; returns the busy share achieved (0..1)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return self.busy_s / self.wall_s if self.wall_s > 0 else 0.0

    def _run(self) -> None:
        import torch

        dev = torch.device(self.device)
        stream = torch.cuda.Stream(dev)  # normal priority, like any program that does not ask for more
        a = torch.randn(self.size, self.size, device=dev, dtype=torch.float16)
        b = torch.randn(self.size, self.size, device=dev, dtype=torch.float16)
        out = torch.empty_like(a)
        began = time.monotonic()
        with torch.cuda.stream(stream):
            while not self._stop.is_set():
                start = time.monotonic()
                burst_end = start + self.duty * self.period_s
                while time.monotonic() < burst_end:  # a few kernels in flight at a time, as a renderer keeps
                    for _ in range(4):
                        torch.matmul(a, b, out=out)
                    stream.synchronize()
                self.busy_s += time.monotonic() - start
                rest = start + self.period_s - time.monotonic()
                if rest > 0:
                    self._stop.wait(rest)
        self.wall_s = time.monotonic() - began


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duty", type=float, default=0.7, help="share of each period the GPU is kept busy (default 0.7)")
    p.add_argument("--period-ms", type=float, default=DEFAULT_PERIOD_S * 1000, help="burst period (default 100)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="matrix size of the products (default 4096)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: on SIGINT/SIGTERM)")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_load: no CUDA device", file=sys.stderr)
        return 2
    load = CompetingLoad(args.duty, args.device, args.period_ms / 1000.0, args.size)
    done = threading.Event()

    def stop(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    load.start()
    print(f"gpu_load: keeping {torch.cuda.get_device_name(args.device)} {args.duty:.0%} busy in "
          f"{args.period_ms:.0f} ms periods", flush=True)
    done.wait(args.seconds)
    print(f"gpu_load: achieved busy share {load.stop():.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
