"""Progress of the long steps before training: checking, reading and decoding tens of thousands of frames.

A 20,000-frame dataset takes minutes to load; without a word the run looks hung. Each stage reports when it
starts (before its first file), then as it goes and when it ends: as a tqdm bar when bars are wanted, else as
lines through `say` at most every `every` seconds (logs, `--no-progress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Stage:
    """One counted stage; `advance` after each item, `close` at the end (or use it as a context manager)."""

    def __init__(self, what: str, total: int, say: Callable[[str], None] | None, bar: bool, every: float) -> None:
        self.what, self.total, self.done = what, total, 0
        self._say, self._every = say, every
        self._bar: Any = None
        self._started = self._last = time.monotonic()
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit="frame", leave=False, dynamic_ncols=True)
            self._bar.refresh()
        elif say is not None:
            say(f"{what}: 0/{total}")

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self._say is not None and now - self._last >= self._every and self.done < self.total:
            self._last = now
            self._say(f"{self.what}: {self.done}/{self.total} ({self.done / (now - self._started):.0f}/s)")

    def close(self, failed: bool = False) -> None:
        """End the stage; a failed one says nothing more (its error will)."""
        if self._bar is not None:
            self._bar.close()
        elif self._say is not None and not failed:
            self._say(f"{self.what}: {self.done}/{self.total} in {time.monotonic() - self._started:.1f} s")

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=kind is not None)


class LoadProgress:
    """Makes the stages of one load; the default reports nothing (library use, tests)."""

    def __init__(self, say: Callable[[str], None] | None = None, bar: bool = False, every: float = 5.0) -> None:
        self.say, self.bar, self.every = say, bar, every

    def stage(self, what: str, total: int) -> Stage:
        return Stage(what, total, self.say, self.bar, self.every)


QUIET = LoadProgress()
