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
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from drivers.cuda_streams import realtime_stream
from drivers.face.diffposetalk.hops import HopGraphs, HopInput, run_hops
from drivers.face.diffposetalk.model import DiffPoseTalkModel

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 0.004  # how long the first hop of a batch waits for others at most
DEFAULT_MAX_BATCH = 32
MAX_MEMBERS = 256  # drivers one batcher serves; each has at most one hop waiting
COST_SMOOTHING = 0.2  # weight of the newest batch in the running cost estimate


def bucket(n: int) -> int:
    """The batch size `n` hops run at: the next power of two (a CUDA graph per size)."""
    return 1 << max(0, n - 1).bit_length()


def close_time(first_arrival: float, deadlines: Sequence[float], window_s: float, cost_s: float) -> float:
    """When a batch stops waiting for more hops: the window after its first hop, or earlier so that it can
    still finish (`cost_s`, the batch's expected run time) before the earliest deadline among its hops."""
    return min(first_arrival + window_s, min(deadlines) - cost_s)


@dataclass
class _Request:
    hop: HopInput
    deadline: float
    arrival: float
    ready: Any = None  # torch.cuda.Event: the hop's inputs are made (on the submitting thread's stream)
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[torch.Tensor, torch.Tensor] | None = None
    finished: Any = None  # torch.cuda.Event: the result is computed (on the batcher's stream)
    error: BaseException | None = None


@dataclass
class BatchRecord:
    """One batch that ran: for benchmarks and tests."""

    started: float
    size: int
    seconds: float
    earliest_deadline: float
    waited: float  # from the first hop's arrival to the start: how long the batch stayed open


class HopBatcher:
    """Runs the hops of every member driver of one model as batches (see the module docstring). Thread-safe;
    `run` blocks its caller until its hop is done."""

    def __init__(self, model: DiffPoseTalkModel, window_s: float = DEFAULT_WINDOW_S,
                 max_batch: int = DEFAULT_MAX_BATCH, cuda_graph: bool = True, priority: bool = True) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError("a hop batcher needs window_s >= 0 and max_batch >= 1")
        self.model = model
        self.window_s = window_s
        self.max_batch = max_batch
        cuda = model.device.type == "cuda"
        self.graphs = HopGraphs(model) if cuda and cuda_graph else None
        self.stream: Any = realtime_stream(model.device, priority) if cuda else None
        self._cond = threading.Condition()
        self._work = threading.Lock()  # the graphs and the stream serve one batch (or warm-up) at a time
        self._pending: list[_Request] = []
        self._members = 0
        self._cost: dict[int, float] = {}
        self._thread: threading.Thread | None = None
        self.history: list[BatchRecord] = []
        """The most recent batches (bounded)."""

    # ------------------------------------------------------------------------------------- membership
    def join(self) -> None:
        """A driver will submit hops; the batch window closes at once when every member has one waiting."""
        with self._cond:
            if self._members >= MAX_MEMBERS:
                raise RuntimeError(f"one DiffPoseTalk model serves at most {MAX_MEMBERS} sessions")
            self._members += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="diffposetalk-hops", daemon=True)
                self._thread.start()

    def leave(self) -> None:
        with self._cond:
            self._members = max(0, self._members - 1)
            self._cond.notify_all()
            thread = self._thread if self._members == 0 else None
            if thread is not None:
                self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    @property
    def members(self) -> int:
        with self._cond:
            return self._members

    # ------------------------------------------------------------------------------------- hops
    def run(self, hop: HopInput, deadline: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The hop's (window x0, window features), computed in a batch that stops waiting for other hops early
        enough to end by `deadline` (time.monotonic(); less the batch's measured run time). Called by a member's
        own thread."""
        req = _Request(hop, deadline, time.monotonic())
        if self.stream is not None:
            req.ready = torch.cuda.Event()
            req.ready.record()
        with self._cond:
            if self._thread is None:
                raise RuntimeError("HopBatcher.run before join(): the driver is not a member")
            if len(self._pending) >= max(self._members, 1):
                raise RuntimeError("a DiffPoseTalk driver submitted a second hop before its first came back")
            self._pending.append(req)
            self._cond.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
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

    # ------------------------------------------------------------------------------------- the thread
    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                batch = self._collect(me)
                if batch is None:
                    return
            self._run_batch(batch)

    def _collect(self, me: threading.Thread) -> list[_Request] | None:
        """Wait (holding the condition) for a batch to close; None when the last member left (a member joining
        later starts another thread, and this one ends even if it had not woken up yet)."""
        while True:
            self._cond.wait_for(lambda: bool(self._pending) or self._thread is not me)
            if self._thread is not me:
                return None
            first = min(r.arrival for r in self._pending)
            while True:
                n = len(self._pending)
                if n >= self._members or n >= self.max_batch:
                    break
                due = close_time(first, [r.deadline for r in self._pending], self.window_s,
                                 self._cost.get(bucket(n + 1), 0.0))
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                self._cond.wait(wait)
            self._pending.sort(key=lambda r: r.deadline)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            return batch

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
            took = time.monotonic() - started
            self._cost[size] = took if size not in self._cost else (
                (1 - COST_SMOOTHING) * self._cost[size] + COST_SMOOTHING * took)
            self.history.append(BatchRecord(started, len(reqs), took, min(r.deadline for r in reqs),
                                            started - min(r.arrival for r in reqs)))
            del self.history[:-1024]
            for r in reqs:
                r.done.set()

    def _on_stream(self, hops: list[HopInput], pad_to: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        with self._work:
            if self.stream is None:
                return run_hops(self.model, hops, self.graphs, pad_to)
            with torch.cuda.stream(self.stream):
                return run_hops(self.model, hops, self.graphs, pad_to)
