"""Calls that can hang, run where a hang cannot hold the daemon.

A sound server that stopped answering, a file on a network share that never opens, a device driver stuck in
its close: each such call runs on a daemon thread of its own and the caller waits only until a deadline.
Past it the caller goes on (with an `Overdue` saying what did not finish and what to do) and the thread is
left behind; being a daemon thread it never holds the process's exit. Nothing here uses the event loop's
default executor, whose threads `asyncio.run` waits for without limit when the loop closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bridge.core.errors import UserError

T = TypeVar("T")


class Overdue(UserError):
    """A call that did not finish by its deadline (it may still finish later, unobserved)."""


def _overdue(what: str, seconds: float, fix: str) -> Overdue:
    return Overdue(f"{what} did not finish within {seconds:g} s; {fix}")


def call_with_deadline(fn: Callable[[], T], seconds: float, what: str, fix: str) -> T:
    """`fn()` on a daemon thread; its result or its exception, or Overdue after `seconds`."""
    outcome: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=f"bounded: {what}"[:60], daemon=True).start()
    if not done.wait(seconds):
        raise _overdue(what, seconds, fix)
    if failure:
        raise failure[0]
    return outcome[0]


async def off_loop(fn: Callable[[], T], seconds: float | None, what: str, fix: str) -> T:
    """`fn()` on a daemon thread, awaited on the running loop for at most `seconds` (then Overdue; None:
    without a deadline, for callers that bound the wait themselves)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: list[T], error: list[BaseException]) -> None:
        if not future.done():
            if error:
                future.set_exception(error[0])
            else:
                future.set_result(result[0])

    def run() -> None:
        result: list[T] = []
        error: list[BaseException] = []
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)
        with contextlib.suppress(RuntimeError):  # the loop closed while this ran: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"bounded: {what}"[:60], daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), seconds)
    except TimeoutError:
        raise _overdue(what, seconds or 0.0, fix) from None


async def unless_stopped(stop: asyncio.Event, work: Awaitable[object]) -> None:
    """Await `work` (its exceptions raised here) unless `stop` is set first: then it is cancelled and this
    returns at once (what it runs on other threads goes on unobserved). For start-up work that waits on an
    outside server, so a stop request during it is obeyed at once."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()


class UnwaitedExecutor(ThreadPoolExecutor):
    """The loop's default executor, whose shutdown does not wait for its threads: a blocking call that never
    returns (a device query to a hung sound server) must not keep `asyncio.run` from returning."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=True)
