"""A thread that runs the work of many sessions that falls due together as batches.

Sessions sharing a model (DiffPoseTalk hops, FlashAvatar frames) each hand one request at a time to the
model's batcher and wait for it. The batcher's thread collects the requests that arrive within a short window
and runs them together; the window closes early when every member has a request waiting, when the batch is
full, or when waiting longer would pass the earliest deadline of the requests collected (less the measured cost
of such a batch): a batch never waits past a deadline. What a batch does is the subclass's `_run_batch`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

MAX_MEMBERS = 256  # sessions one batcher serves; each has at most one request waiting
COST_SMOOTHING = 0.2  # weight of the newest batch in the running cost estimate
HISTORY = 1024  # batches kept for benchmarks and tests


def bucket(n: int) -> int:
    """The batch size `n` requests run at where sizes are rounded: the next power of two (a CUDA graph per
    size)."""
    return 1 << max(0, n - 1).bit_length()


def close_time(first_arrival: float, deadlines: Sequence[float], window_s: float, cost_s: float) -> float:
    """When a batch stops waiting for more requests: the window after its first one, or earlier so that it can
    still finish (`cost_s`, the batch's expected run time) before the earliest deadline among them."""
    return min(first_arrival + window_s, min(deadlines) - cost_s)


@dataclass
class Request:
    """One member's request: its deadline (time.monotonic(); inf for none), and what the batch hands back."""

    deadline: float
    arrival: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class BatchRecord:
    """One batch that ran: for benchmarks and tests."""

    started: float
    size: int
    seconds: float
    earliest_deadline: float
    waited: float  # from the first request's arrival to the start: how long the batch stayed open


R = TypeVar("R", bound=Request)


class BatchWindow(Generic[R]):
    """Membership, the collecting thread and the cost estimate of a batcher (see the module docstring).
    Thread-safe; `_wait` blocks its caller until its request is done."""

    thread_name = "batches"
    what = "session"

    def __init__(self, window_s: float, max_batch: int) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError("a batcher needs window_s >= 0 and max_batch >= 1")
        self.window_s = window_s
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[R] = []
        self._members = 0
        self._cost: dict[int, float] = {}
        self._thread: threading.Thread | None = None
        self.history: list[BatchRecord] = []
        """The most recent batches (bounded)."""

    # ------------------------------------------------------------------------------------- membership
    def join(self) -> None:
        """A member will submit requests; the window closes at once when every member has one waiting."""
        with self._cond:
            if self._members >= MAX_MEMBERS:
                raise RuntimeError(f"one model serves at most {MAX_MEMBERS} sessions")
            self._members += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)
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

    # ------------------------------------------------------------------------------------- requests
    def _wait(self, req: R) -> R:
        """Queue `req` and wait until its batch ran; raises the batch's error on this (the member's) thread."""
        with self._cond:
            if self._thread is None:
                raise RuntimeError(f"a {self.what} request before join(): the caller is not a member")
            if len(self._pending) >= max(self._members, 1):
                raise RuntimeError(f"a {self.what} submitted a second request before its first came back")
            self._pending.append(req)
            self._cond.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req

    def _window(self) -> float:
        """How long the first request of a batch may wait for others (the subclass may shorten it)."""
        return self.window_s

    def _expected_cost(self, n: int) -> float:
        """The measured run time of a batch of `n` (0 until one ran)."""
        return self._cost.get(self._cost_key(n), 0.0)

    def _cost_key(self, n: int) -> int:
        return n

    def _record(self, reqs: Sequence[R], started: float, size: int) -> None:
        """Update the cost estimate of batches of `size` and the history, once the batch of `reqs` has run."""
        took = time.monotonic() - started
        key = self._cost_key(size)
        self._cost[key] = took if key not in self._cost else (
            (1 - COST_SMOOTHING) * self._cost[key] + COST_SMOOTHING * took)
        self.history.append(BatchRecord(started, len(reqs), took, min(r.deadline for r in reqs),
                                        started - min(r.arrival for r in reqs)))
        del self.history[:-HISTORY]

    # ------------------------------------------------------------------------------------- the thread
    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                batch = self._collect(me)
                if batch is None:
                    return
            try:
                self._run_batch(batch)
            except Exception as exc:  # each waiting member raises it on its own thread; the thread goes on
                log.exception("a batch of %d failed", len(batch))
                for r in batch:
                    if not r.done.is_set():
                        r.error = exc
                        r.done.set()

    def _collect(self, me: threading.Thread) -> list[R] | None:
        """Wait (holding the condition) for a batch to close; None when the last member left (a member joining
        later starts another thread, and this one ends even if it had not woken up yet)."""
        while True:
            self._cond.wait_for(lambda: bool(self._pending) or self._thread is not me)
            if self._thread is not me:
                if self._thread is None:  # the last member left: no request waits for an answer that never comes
                    for r in self._pending:
                        r.error = RuntimeError(f"the {self.what}'s batcher stopped: every member left")
                        r.done.set()
                    self._pending.clear()
                return None
            first = min(r.arrival for r in self._pending)
            while True:
                n = len(self._pending)
                if n >= self._members or n >= self.max_batch:
                    break
                due = close_time(first, [r.deadline for r in self._pending], self._window(),
                                 self._expected_cost(n + 1))
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                self._cond.wait(None if math.isinf(wait) else wait)
            self._pending.sort(key=lambda r: r.deadline)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            return batch

    def _run_batch(self, batch: list[R]) -> None:
        """Run the batch and set each request's `done` (with its result or `error`)."""
        raise NotImplementedError
