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
from typing import Any

import torch

CAPTURE_LOCK = threading.Lock()


@contextmanager
def capturing(graph: torch.cuda.CUDAGraph, mode: str = "thread_local", pool: Any = None) -> Iterator[None]:
    """`torch.cuda.graph(graph)` under the process-wide capture lock, without autograd; with `pool` (a
    `torch.cuda.graph_pool_handle()`) the graph's memory comes from that pool, shared with the other graphs
    captured into it. Graphs may share a pool when they are never replayed at the same time and none reads
    another's memory after its replay (each output is copied out or held by a live tensor): then the pool holds
    what the largest of them needs rather than the sum."""
    with (CAPTURE_LOCK, torch.cuda.graph(graph, pool=pool, capture_error_mode=mode),  # type: ignore[arg-type]
          torch.no_grad()):
        yield
