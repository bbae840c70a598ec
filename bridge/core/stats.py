"""Per-stage timings and counters of the pipeline, readable from any thread (CLI report, HTTP, metrics)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StageStats:
    """A rolling window of durations (seconds) plus counters for one stage."""

    window: int = 512
    samples: deque[float] = field(default_factory=deque)
    count: int = 0
    dropped: int = 0
    total: float = 0.0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        if len(self.samples) > self.window:
            self.samples.popleft()
        self.count += 1
        self.total += seconds

    def percentiles(self) -> dict[str, float]:
        if not self.samples:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
        arr = np.fromiter(self.samples, dtype=np.float64) * 1000.0
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(arr.mean())}


class PipelineStats:
    """Thread-safe collection of named stages and counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, StageStats] = {}
        self._counters: dict[str, int] = {}

    def time(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._stages.setdefault(stage, StageStats()).add(seconds)

    def drop(self, stage: str, n: int = 1) -> None:
        with self._lock:
            self._stages.setdefault(stage, StageStats()).dropped += n

    def incr(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + n

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            stages = {
                name: {"count": s.count, "dropped": s.dropped, **s.percentiles()} for name, s in self._stages.items()
            }
            return {"stages": stages, "counters": dict(self._counters)}

    def report(self) -> str:
        snap = self.snapshot()
        lines = [f"{'stage':<18}{'count':>8}{'dropped':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
        for name, s in snap["stages"].items():
            lines.append(
                f"{name:<18}{s['count']:>8}{s['dropped']:>9}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            )
        for name, value in snap["counters"].items():
            lines.append(f"{name:<36}{value:>9}")
        return "\n".join(lines)
