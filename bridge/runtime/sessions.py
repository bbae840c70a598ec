"""The daemon's sessions by name, and admission: how many it may serve at once and whether one more fits.

Names are the vocabulary of every place a session is addressed (HTTP paths, OSC addresses): a name is looked
up here before it is used as a key anywhere, and a new one can never shadow a control word (`/avatar/blend/…`
stays the default session's blendshape). Created sessions get a random, unguessable id (like a WHEP session's):
whoever created it holds the id, and ending it needs the id and the API's token.

Capacity is `sessions.max`, or measured ("auto"): what the running sessions' renders and face-driver hops cost
per second of video, and how many more sessions costing what the default one does fit in what is left. A
session more than that would make every session late, so it is refused with a time to retry instead. A
measured capacity is an estimate (the cost of a GPU's work says nothing of the process's own limits, such as
its interpreter's lock), so it is also checked against what happens: while a running session has had late
frames in the last `LATE_WINDOW_S`, the daemon is at its limit already and takes no new session.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.controls.commands import IDLE_FEATURES, MODIFIERS
from bridge.core.config import SESSION_NAME, Config, SessionSpec, merge_tables
from bridge.core.errors import UserError

if TYPE_CHECKING:
    from bridge.runtime.session import Session

DEFAULT = "default"
_NAME = re.compile(SESSION_NAME)
# First segments of control addresses and queries: a session may not be called like one.
RESERVED = frozenset({*MODIFIERS, *IDLE_FEATURES, "blend", "preset", "emotion", "head", "reset", "flame", "idle",
                      "ping", "pong", "state", "get", "value", "avatar", "sessions"})
MIN_SAMPLES = 25  # renders the default session must have timed before its cost says anything
LATE_WINDOW_S = 10.0  # with a measured capacity, no session is added while one had late frames this recently
BUDGET = 0.75  # share of the compute the sessions may fill: the rest absorbs jitter (a burst, a GC pause)


class SessionsFull(UserError):
    """No room for one more session now; `retry_after` is what the client is told to wait (seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name)) and name not in RESERVED


def new_id() -> str:
    """A random session id (96 bits: not guessable, so holding it is what lets a client end the session)."""
    return secrets.token_hex(12)


def session_config(base: Config, spec: SessionSpec, name: str) -> Config:
    """The config a session runs with: the daemon's, changed by `spec`. Sessions other than the default one
    write no files the config names and open no local output devices (`outputs.record.path`, snapshots,
    virtual camera, delayed audio belong to the default session; a session records into a file the daemon
    names, `bridge.runtime.recordings`), and publish to Janus as their own feed."""
    data = merge_tables(base.model_dump(), spec.overrides())
    if name != DEFAULT:
        data = merge_tables(data, {
            "outputs": {"record": {"path": None}, "snapshot_dir": None, "virtualcam": {"enabled": False},
                        "passthrough": {"enabled": False, "create": False}},
            "webrtc": {"janus": {"display": f"{base.webrtc.janus.display} {name}"}},
        })
    try:
        return Config.model_validate(data)
    except ValueError as exc:
        raise UserError(f"session {name!r} cannot run with these settings: {exc}") from None


@dataclass(frozen=True)
class Load:
    """What one session costs: the share of a second of compute its renders and face hops take."""

    render_s: float  # compute seconds per second of video spent rendering
    face_s: float  # ... and in the face driver's hops

    @property
    def busy(self) -> float:
        return self.render_s + self.face_s


def measured_load(session: Session) -> Load | None:
    """The session's cost from its timed stages (median × runs per second of stream), or None while it has
    rendered too few frames to say."""
    snap = session.stats.snapshot()["stages"]
    render, face = snap.get("render"), snap.get("face")
    elapsed = session.clock.now()
    if render is None or int(render["count"]) < MIN_SAMPLES or elapsed <= 0:
        return None

    def per_second(stage: dict[str, Any] | None) -> float:
        if stage is None:
            return 0.0
        return float(stage["p50_ms"]) / 1000.0 * int(stage["count"]) / elapsed

    return Load(per_second(render), per_second(face))


def capacity_from(load: Load, workers: int, spent: float | None = None, running: int = 1) -> int:
    """Sessions that fit `workers` parallel units of compute (GPUs, or CPU cores) at `BUDGET` each: the
    `running` ones, whose measured cost together is `spent` (default: `running` sessions costing `load`), and as
    many more as fit in what is left at `load` each."""
    used = load.busy * running if spent is None else spent
    more = max(0.0, BUDGET * workers - used) / max(load.busy, 1e-3)
    return max(1, min(1024, running + int(more)))


class SessionRegistry:
    """The running sessions by name, and the admission of new ones."""

    def __init__(self, config: Config) -> None:
        self._config = config.sessions
        self._sessions: dict[str, Session] = {}
        self._pending = 0  # sessions being built: they count against the capacity already
        self.refused = 0

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._sessions

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, name: str) -> Session | None:
        return self._sessions.get(name) if valid_name(name) or name == DEFAULT else None

    @property
    def default(self) -> Session | None:
        return self._sessions.get(DEFAULT)

    def capacity(self) -> int | None:
        """Sessions at once, the default one included; None while "auto" has not measured yet."""
        if self._config.max != "auto":
            return int(self._config.max)
        default = self.default
        load = measured_load(default) if default is not None else None
        if load is None:
            return None
        on_gpu = default is not None and default.avatar.device.startswith("cuda")
        # What every running session costs as measured (one too new to say costs what the default one does).
        spent = sum((measured_load(s) or load).busy for s in self)
        return capacity_from(load, 1 if on_gpu else (os.cpu_count() or 1), spent, max(1, len(self)))

    def reserve(self) -> None:
        """Take a place for a session about to be built; raises SessionsFull (then nothing was taken)."""
        cap = self.capacity()
        retry = self._config.retry_after_s
        if cap is None:
            self.refused += 1
            raise SessionsFull("the daemon is still measuring how many sessions it can serve",
                               retry_after=min(retry, 5))
        late = self.late_sessions() if self._config.max == "auto" else []
        if late:
            self.refused += 1
            raise SessionsFull(f"session {late[0]!r} missed frame deadlines in the last {LATE_WINDOW_S:.0f} s: the "
                               "daemon is at its limit and one more session would make every session late",
                               retry_after=retry)
        if len(self._sessions) + self._pending >= cap:
            self.refused += 1
            how = "sessions.max" if self._config.max != "auto" else "measured from render and face-driver cost"
            raise SessionsFull(f"the daemon already serves {cap} sessions ({how}); one more would make every "
                               "session late", retry_after=retry)
        self._pending += 1

    def late_sessions(self, window_s: float = LATE_WINDOW_S) -> list[str]:
        """The running sessions that had a late frame within the last `window_s` of their streams."""
        return [s.name for s in self if s.pipeline.late_within(window_s)]

    def release(self) -> None:
        """Give back a place taken by `reserve` (the session was added, or its build failed)."""
        self._pending = max(0, self._pending - 1)

    def add(self, session: Session) -> None:
        if session.name in self._sessions:
            raise UserError(f"a session named {session.name!r} already runs; choose another name")
        self._sessions[session.name] = session

    def remove(self, name: str) -> Session | None:
        return self._sessions.pop(name, None)

    def describe(self) -> dict[str, Any]:
        return {"sessions": [s.describe() for s in self], "count": len(self), "capacity": self.capacity(),
                "pending": self._pending, "refused": self.refused}
