"""Which stage of the running pipeline stopped producing, and since when.

Each stage (audio, face, clock, render, every sink) beats when it hands something on. A stage that has not
beaten for `stall_after` seconds while the pipeline runs is stalled: `/health` answers 503 naming it, so a
supervisor (systemd, a stream operator's monitoring) sees a frozen avatar even though the process is alive.
A stage that ended normally (a file's audio ran out) is done, not stalled; a sink that gave up (a full disk)
is failed. Beats are single dictionary stores, cheap enough for every frame and never blocking the reader.

Outputs that run by themselves (the voice on a sound server, a publisher to a media server) are followed
instead: the watchdog asks them, when it reports, when they last made progress and whether they gave up.
A stage can carry a note of what it is doing (a sink "opening" its file), so a stall says where it hangs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bridge.core.interfaces import OutputProbe

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
        self._followed: dict[str, OutputProbe] = {}
        self._notes: dict[str, str] = {}
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

    def follow(self, stage: str, probe: OutputProbe) -> None:
        """Watch an output that beats by itself: `probe()` says (its last progress, why it gave up or None),
        its last progress on this watchdog's clock (time.monotonic by default)."""
        self.watch(stage)
        self._followed[stage] = probe

    def note(self, stage: str, doing: str | None) -> None:
        """What the stage is busy with now ("opening", "closing"), shown with its state; None clears it."""
        if doing is None:
            self._notes.pop(stage, None)
        else:
            self._notes[stage] = doing

    def forget(self, stage: str) -> None:
        """The stage is gone on purpose (a sink removed)."""
        self._watched.pop(stage, None)
        self._followed.pop(stage, None)
        self._notes.pop(stage, None)
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
        for stage, probe in list(self._followed.items()):
            last_progress, gave_up = probe()
            if last_progress is not None:
                self._last[stage] = last_progress
            if gave_up is not None:
                self._failed[stage] = gave_up
            else:
                self._failed.pop(stage, None)
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
            if stage in self._notes:
                entry["doing"] = self._notes[stage]
            stages[stage] = entry
        bad = [{"stage": name, **info} for name, info in stages.items() if info["state"] in ("stalled", "failed")]
        return {"ok": not bad, "stalled": bad, "stages": stages, "stall_after_s": self.stall_after}
