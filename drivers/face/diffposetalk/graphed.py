"""GPU work of a streaming hop replayed as CUDA graphs: one launch instead of thousands.

A hop runs the denoiser a few times (DDIM) to a few hundred times (DDPM) on inputs of a fixed shape; launched
eagerly, the CPU-side dispatch costs far more than the GPU work. With the deterministic DDIM sampler the whole
window (guidance inputs, every step, the update rule) is one graph; with DDPM (fresh noise every step, drawn on
the host generator) each denoiser call is. Graphs are captured lazily, one per input signature (the first hop,
without previous motion, has its own), and the eager function runs when capture fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from drivers.cuda_graphs import capturing

log = logging.getLogger(__name__)

_warned: set[str] = set()
Signature = tuple[tuple[tuple[int, ...], torch.dtype] | None, ...]


class _Captured:
    def __init__(self, inputs: list[torch.Tensor | None], output: torch.Tensor, graph: torch.cuda.CUDAGraph) -> None:
        self.inputs, self.output, self.graph = inputs, output, graph


class GraphedCall:
    """`fn(*tensors_or_None) -> tensor`, replayed from a CUDA graph per input signature. `fn` must be a pure
    function of its inputs on one CUDA device (no host synchronisation, no host-side randomness)."""

    def __init__(self, net: Callable[..., torch.Tensor], warmup: int = 2, what: str = "DiffPoseTalk",
                 capture_error_mode: str = "thread_local", pool: Any = None) -> None:
        self.net = net
        self.pool = pool  # a graph pool shared with other calls replayed by the same thread (see `capturing`)
        self.what = what
        # "thread_local": CUDA calls of other threads (the avatar's render thread) do not void this capture.
        self.capture_error_mode = capture_error_mode
        self.warmup = warmup
        self._graphs: dict[Signature, _Captured | None] = {}

    def captured(self) -> int:
        """How many graphs were captured (failed captures, which run eagerly, are not counted)."""
        return sum(c is not None for c in self._graphs.values())

    @staticmethod
    def signature(inputs: tuple[torch.Tensor | None, ...]) -> Signature:
        return tuple(None if t is None else (tuple(t.shape), t.dtype) for t in inputs)

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        key = self.signature(inputs)
        if key not in self._graphs:
            self._graphs[key] = self._capture(inputs)
        captured = self._graphs[key]
        if captured is None:
            return self.net(*inputs)
        for static, given in zip(captured.inputs, inputs):
            if static is not None and given is not None:
                static.copy_(given)
        captured.graph.replay()
        return captured.output.clone()

    def _capture(self, inputs: tuple[torch.Tensor | None, ...]) -> _Captured | None:
        static = [None if t is None else t.clone() for t in inputs]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.net(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with capturing(graph, self.capture_error_mode, self.pool):
                output = self.net(*static)
        except RuntimeError as exc:  # an optimisation only: keep running eagerly
            if self.what not in _warned:
                _warned.add(self.what)
                log.warning("CUDA graph capture of %s failed (%s); running it eagerly",
                            self.what, str(exc).splitlines()[0])
            return None
        return _Captured(static, output, graph)
