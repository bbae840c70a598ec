"""Latest-wins fan-out of items from a producer thread to many consumers (threads or asyncio tasks).

Each subscriber has its own small queue that drops the *oldest* item when full: a slow consumer loses frames,
it never delays the producer or the other consumers, and never builds up latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    def __init__(self, hub: Broadcast[T], maxsize: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self._hub = hub
        self._items: collections.deque[T] = collections.deque(maxlen=maxsize)
        self._cond = threading.Condition()
        self._loop = loop
        self._event = asyncio.Event() if loop is not None else None
        self.dropped = 0
        self.closed = False

    def _put(self, item: T) -> None:
        with self._cond:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
        if self._loop is not None and self._event is not None:
            try:
                self._loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # loop already closed: the consumer is gone
                self.closed = True

    def get(self, timeout: float | None = None) -> T | None:
        """Blocking get for consumer threads; None on timeout or when closed."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    async def aget(self) -> T | None:
        """Await the next item on the loop this subscription was made on; None once closed."""
        assert self._event is not None, "subscribe(loop=...) to await items"
        while True:
            with self._cond:
                if self._items:
                    return self._items.popleft()
                if self.closed:
                    return None
                self._event.clear()
            await self._event.wait()

    def close(self) -> None:
        self._hub._remove(self)
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        if self._loop is not None and self._event is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._event.set)


class Broadcast(Generic[T]):
    """Publish from any thread; every subscriber sees items in order, minus what it was too slow to take."""

    def __init__(self) -> None:
        self._subs: list[Subscription[T]] = []
        self._lock = threading.Lock()
        self.latest: T | None = None

    def subscribe(self, maxsize: int = 2, loop: asyncio.AbstractEventLoop | None = None) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self, maxsize, loop)
        with self._lock:
            self._subs.append(sub)
        return sub

    def publish(self, item: T) -> None:
        self.latest = item
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._put(item)

    def _remove(self, sub: Subscription[T]) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()
