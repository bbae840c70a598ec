"""CUDA graph captures take turns across the process.

Beginning a capture (`torch.cuda.graph`) synchronises the whole device, which voids a capture under way on
another thread; the face driver and the avatar capture on their own threads, so every capture holds one lock.
Everything else (replays, eager kernels, host copies of other threads) goes on meanwhile: captures run in
thread-local mode, where other threads' calls do not void them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CAPTURE_LOCK = threading.Lock()


@contextmanager
def capturing(graph: torch.cuda.CUDAGraph, mode: str = "thread_local") -> Iterator[None]:
    """`torch.cuda.graph(graph)` under the process-wide capture lock, without autograd."""
    with CAPTURE_LOCK, torch.cuda.graph(graph, capture_error_mode=mode), torch.no_grad():  # type: ignore[arg-type]
        yield
