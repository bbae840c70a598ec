"""Which stage of the running pipeline stopped producing, and since when.

Each stage (audio, face, clock, render, every sink) beats when it hands something on. A stage that has not
beaten for `stall_after` seconds while the pipeline runs is stalled: `/health` answers 503 naming it, so a
supervisor (systemd, a stream operator's monitoring) sees a frozen avatar even though the process is alive.
A stage that ended normally (a file's audio ran out) is done, not stalled; a sink that gave up (a full disk)
is failed. Beats are single dictionary stores, cheap enough for every frame and never blocking the reader.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

PIPELINE_STAGES = ("audio", "face", "clock", "render")
STALL_AFTER_S = 2.0  # a stage quiet this long is stalled


class Watchdog:
    def __init__(self, stall_after: float = STALL_AFTER_S, now: Callable[[], float] = time.monotonic) -> None:
        self.stall_after = stall_after
        self._now = now
        self._watched: dict[str, float] = {}  # stage -> when it began to be watched
        self._last: dict[str, float] = {}  # stage -> its last beat
        self._done: set[str] = set()
        self._failed: dict[str, str] = {}
        self.running = False

    def start(self, stages: tuple[str, ...] = PIPELINE_STAGES) -> None:
        for stage in stages:
            self.watch(stage)
        self.running = True

    def stop(self) -> None:
        self.running = False

    def watch(self, stage: str) -> None:
        """Expect beats from `stage` from now on."""
        self._watched[stage] = self._now()
        self._done.discard(stage)
        self._failed.pop(stage, None)

    def forget(self, stage: str) -> None:
        """The stage is gone on purpose (a sink removed)."""
        self._watched.pop(stage, None)
        self._last.pop(stage, None)
        self._done.discard(stage)
        self._failed.pop(stage, None)

    def beat(self, stage: str) -> None:
        self._last[stage] = self._now()

    def done(self, stage: str) -> None:
        """The stage ended as it should (its input ran out): silence from it is no fault."""
        self._done.add(stage)

    def fail(self, stage: str, reason: str) -> None:
        self._failed[stage] = reason

    def report(self) -> dict[str, Any]:
        """{"ok": bool, "stalled": [...], "stages": {stage: {...}}}; each stage's state is ok, stalled, done or
        failed, with its last frame as seconds ago and as a UTC time ("since when")."""
        now, wall = self._now(), time.time()
        stages: dict[str, dict[str, Any]] = {}
        for stage, watched_at in list(self._watched.items()):
            last = self._last.get(stage)
            quiet_since = last if last is not None and last >= watched_at else watched_at
            quiet = now - quiet_since
            if stage in self._failed:
                state = "failed"
            elif stage in self._done:
                state = "done"
            elif self.running and quiet > self.stall_after:
                state = "stalled"
            else:
                state = "ok"
            entry: dict[str, Any] = {
                "state": state,
                "last_frame_s_ago": None if last is None else round(now - last, 3),
                "since": datetime.fromtimestamp(wall - quiet, timezone.utc).isoformat(timespec="milliseconds"),
            }
            if stage in self._failed:
                entry["error"] = self._failed[stage]
            stages[stage] = entry
        bad = [{"stage": name, **info} for name, info in stages.items() if info["state"] in ("stalled", "failed")]
        return {"ok": not bad, "stalled": bad, "stages": stages, "stall_after_s": self.stall_after}
