"""One forward for the DiffPoseTalk hops of many sessions that fall due together.

Every session's driver keeps its own engine (audio, statistics, seeds, motion condition, clock); only the model
work of a hop is shared. A driver hands its prepared hop to the `HopBatcher` of its model with a deadline and
waits; the batcher's thread collects the hops that arrive within a short window, runs the hops of one
`batch_key` as one batch (`hops.run_hops`), and hands each driver its row. The window closes early when
every member has a hop waiting, when the batch is full, or when waiting longer would pass the earliest
deadline of the hops collected (less the measured cost of such a batch): a batch never waits past a deadline.

On CUDA the batcher's work runs on a high-priority stream, and batch sizes are rounded up to a power of two so
that a handful of CUDA graphs (one per size) serve any number of sessions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch

from drivers.batch_window import BatchRecord, BatchWindow, Request, bucket, close_time
from drivers.cuda_streams import realtime_stream
from drivers.face.diffposetalk.hops import HopGraphs, HopInput, run_hops
from drivers.face.diffposetalk.model import DiffPoseTalkModel

log = logging.getLogger(__name__)
__all__ = ["BatchRecord", "HopBatcher", "bucket", "close_time"]

DEFAULT_WINDOW_S = 0.004  # how long the first hop of a batch waits for others at most
DEFAULT_MAX_BATCH = 32


@dataclass(kw_only=True)
class _Request(Request):
    hop: HopInput
    ready: Any = None  # torch.cuda.Event: the hop's inputs are made (on the submitting thread's stream)
    result: tuple[torch.Tensor, torch.Tensor] | None = None
    finished: Any = None  # torch.cuda.Event: the result is computed (on the batcher's stream)


class HopBatcher(BatchWindow[_Request]):
    """Runs the hops of every member driver of one model as batches (see the module docstring). Thread-safe;
    `run` blocks its caller until its hop is done."""

    thread_name = "diffposetalk-hops"
    what = "DiffPoseTalk driver"

    def __init__(self, model: DiffPoseTalkModel, window_s: float = DEFAULT_WINDOW_S,
                 max_batch: int = DEFAULT_MAX_BATCH, cuda_graph: bool = True, priority: bool = True) -> None:
        super().__init__(window_s, max_batch)
        self.model = model
        cuda = model.device.type == "cuda"
        self.graphs = HopGraphs(model) if cuda and cuda_graph else None
        self.stream: Any = realtime_stream(model.device, priority) if cuda else None
        self._work = threading.Lock()  # the graphs and the stream serve one batch (or warm-up) at a time

    def _cost_key(self, n: int) -> int:
        return bucket(n)

    # ------------------------------------------------------------------------------------- hops
    def run(self, hop: HopInput, deadline: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The hop's (window x0, window features), computed in a batch that stops waiting for other hops early
        enough to end by `deadline` (time.monotonic(); less the batch's measured run time). Called by a member's
        own thread."""
        req = _Request(deadline=deadline, hop=hop)
        if self.stream is not None:
            req.ready = torch.cuda.Event()
            req.ready.record()
        self._wait(req)
        assert req.result is not None
        if req.finished is not None:  # the caller's stream continues after the batch's work, and owns the rows
            current = torch.cuda.current_stream(self.model.device)
            current.wait_event(req.finished)
            for t in req.result:
                t.record_stream(current)
        return req.result

    def warm(self, hop: HopInput) -> None:
        """Capture the CUDA graphs of `hop`'s kind for every batch size up to the members' (rounded up), on
        the batcher's stream: at a session's start, not on the first hops that fall due together. Sizes already
        captured only replay; a new size's capture (tens of ms) holds the other sessions' batches meanwhile."""
        if self.graphs is None:
            return
        with self._cond:
            sizes = range(bucket(max(self._members, 1)).bit_length())
        self.stream.wait_stream(torch.cuda.current_stream(self.model.device))  # the hop's inputs are made
        for i in sizes:
            self._on_stream([hop], pad_to=1 << i)
        torch.cuda.synchronize(self.model.device)

    def _run_batch(self, batch: list[_Request]) -> None:
        groups: dict[Hashable, list[_Request]] = {}
        for req in batch:
            groups.setdefault(req.hop.batch_key(), []).append(req)
        for reqs in sorted(groups.values(), key=lambda rs: rs[0].deadline):
            started = time.monotonic()
            size = bucket(len(reqs)) if self.graphs is not None else len(reqs)
            try:
                if self.stream is not None:
                    for r in reqs:
                        self.stream.wait_event(r.ready)
                results = self._on_stream([r.hop for r in reqs], pad_to=size)
                finished = None
                if self.stream is not None:
                    finished = torch.cuda.Event()
                    finished.record(self.stream)
                    finished.synchronize()  # the cost estimate is the GPU's time, not the launch's
                for r, res in zip(reqs, results):
                    r.result, r.finished = res, finished
            except Exception as exc:  # each waiting driver raises it on its own thread
                log.exception("a batch of %d DiffPoseTalk hops failed", len(reqs))
                for r in reqs:
                    r.error = exc
            self._record(reqs, started, size)
            for r in reqs:
                r.done.set()

    def _on_stream(self, hops: list[HopInput], pad_to: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        with self._work:
            if self.stream is None:
                return run_hops(self.model, hops, self.graphs, pad_to)
            with torch.cuda.stream(self.stream):
                return run_hops(self.model, hops, self.graphs, pad_to)
