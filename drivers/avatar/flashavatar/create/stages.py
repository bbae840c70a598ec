"""The stage runner of avatar creation: progress with an ETA, atomic writes, and resumable stages.

A stage is complete when its marker `.stages/<name>.json` exists and records the same inputs (a key built from
the video and the options); the marker is written last, atomically, so a stage cut short by Ctrl-C or a crash has
no marker and is done again from the start. Every file a stage writes goes through `atomic_path` (a temporary
name, renamed into place), so no reader ever sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


class Progress:
    """A one-line progress meter with rate and ETA, redrawn at most a few times a second."""

    def __init__(self, name: str, total: int, unit: str = "frame", stream: IO[str] | None = None,
                 every_s: float = 0.5) -> None:
        self.name, self.total, self.unit = name, max(0, int(total)), unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.done = 0
        self.start = time.perf_counter()
        self._shown = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def eta_s(self) -> float | None:
        elapsed = time.perf_counter() - self.start
        if self.done <= 0 or self.total <= 0:
            return None
        return elapsed / self.done * max(0, self.total - self.done)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = self.eta_s()
        eta_s = "--:--" if eta is None else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        return (f"{self.name}: {self.done}/{self.total} {self.unit}s  {rate:.1f}/s  "
                f"elapsed {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}  ETA {eta_s}")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._shown >= self.every_s or self.done >= self.total:
            self._shown = now
            if self._tty:
                self.stream.write("\r" + self.line() + "\033[K")
            elif now - self.start >= self.every_s * 10 or self.done >= self.total:
                self._shown = now + self.every_s * 9  # a log file gets a line every ~5 s, not a redraw
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\r" + self.line() + "\033[K\n")
            self.stream.flush()


@dataclass
class StageTimes:
    """Seconds each stage took in this run (0 for a stage skipped as complete)."""

    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{k} {v:.1f} s" + (" (done before)" if k in self.skipped else "") for k, v in self.seconds.items()]
        return "stage times: " + ", ".join(parts) + f"; total {sum(self.seconds.values()):.1f} s"


class StageRunner:
    """Runs named stages in a work folder, skipping those whose marker records the same key."""

    def __init__(self, root: Path, key: dict[str, Any], log: Callable[[str], None] = print) -> None:
        self.root = root
        self.key = key
        self.log = log
        self.times = StageTimes()

    def marker(self, name: str) -> Path:
        return self.root / ".stages" / f"{name}.json"

    def is_done(self, name: str, key: dict[str, Any]) -> bool:
        m = self.marker(name)
        try:
            data = json.loads(m.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("key") == key

    def run(self, name: str, fn: Callable[[], T], load: Callable[[], T], inputs: dict[str, Any] | None = None
            ) -> T:
        """`fn()` unless the stage is complete, then `load()` reads its results back. Prints the stage's time.
        `inputs` adds what else the stage depends on to the runner's key (e.g. the FLAME files)."""
        key = {**self.key, **(inputs or {})}
        if self.is_done(name, key):
            try:
                loaded = load()
            except (OSError, ValueError, KeyError):
                pass  # missing or unreadable results: redo the stage
            else:
                self.times.seconds[name] = 0.0
                self.times.skipped.append(name)
                self.log(f"[{name}] complete from an earlier run: skipped")
                return loaded
        self.marker(name).unlink(missing_ok=True)
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        self.times.seconds[name] = dt
        write_text(self.marker(name), json.dumps({"key": key, "seconds": dt}))
        self.log(f"[{name}] {dt:.1f} s")
        return result
