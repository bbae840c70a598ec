"""What both shared encoders (video and Opus) are: one daemon thread that produces items into a Broadcast its
subscribers read, started on first use and stopped when nobody reads any more."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from bridge.core.fanout import Broadcast

T = TypeVar("T")


class EncoderThread(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self.output: Broadcast[T] = Broadcast()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"encode-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does within its poll interval) and end every subscriber's stream."""
        self._stop.set()
        self.output.close()

    def join(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    @property
    def subscribers(self) -> int:
        return self.output.subscriber_count

    def _run(self) -> None:
        raise NotImplementedError
