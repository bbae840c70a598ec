"""The mixer: per channel, lip sync + presets/emotions + manual controls + idle motion → rendered FaceParams.

Order of layers, per FaceParams channel (index of `FaceParams.to_vector()`):
1. the audio-driven values (lip sync);
2. presets and emotions add their deltas, each scaled by its own faded weight;
3. manual controls either add (default for expression and jaw, so a smile keeps lip-syncing) or override
   (default for eyes, eyelids, neck and head), configurable per group or per target;
4. idle motion (saccades, sway, blinks) adds where no manual control holds the channel;
5. manual blinks close the eyelids; the result is clamped to safe ranges.

`apply()` only parses (`commands.CommandParser`) and queues (thread-safe, never raises); `mix()` executes the
queued commands at the frame's media-clock time, so given the same events and times the output is identical (deterministic). A flood of
events is bounded: the queue keeps the newest `queue` events and a frame takes at most
`max_events_per_frame` of them. State is bounded too: targets are canonical before they become keys (the
parser's job), unknown names are refused and counted (`unknown`), and at most `max_manual` manual controls
are held at once (more are refused and counted, `manual_full`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bridge.controls.arkit_maps import ArkitMap, load_for_avatar
from bridge.controls.commands import (
    Blink,
    Command,
    CommandParser,
    ControlError,
    Level,
    Release,
    Reset,
    SetIdle,
    SetLevel,
    SetManual,
    Toggle,
    UnknownTarget,
)
from bridge.controls.idle import IdleLife
from bridge.controls.presets import PresetLibrary
from bridge.controls.vocabulary import CHANNEL_LIMITS
from bridge.core.config import Config
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import ControlEvent

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
VEC = FaceParams.VECTOR_SIZE
L = FaceParams.LAYOUT
Mode = Literal["add", "override"]

EASINGS: dict[str, Callable[[float], float]] = {
    "linear": lambda x: x,
    "smooth": lambda x: x * x * (3 - 2 * x),
    "cubic": lambda x: 4 * x * x * x if x < 0.5 else 1 - (-2 * x + 2) ** 3 / 2,
    "sine": lambda x: 0.5 - 0.5 * float(np.cos(np.pi * x)),
    "out": lambda x: 1 - (1 - x) ** 2,
}

DEFAULT_MODES: dict[str, Mode] = {
    "expression": "add",
    "jaw": "add",
    "eyes": "override",
    "eyelids": "override",
    "neck": "override",
    "head": "override",
    "translation": "add",
}

_LOWER = np.concatenate([np.full(n, CHANNEL_LIMITS[g][0], np.float32) for g, (_, n) in L.items()])
_UPPER = np.concatenate([np.full(n, CHANNEL_LIMITS[g][1], np.float32) for g, (_, n) in L.items()])
_GROUP_OF = np.concatenate([np.full(n, i) for i, (_, n) in enumerate(L.values())])
_GROUPS = list(L)


@dataclass
class MixerSettings:
    fade: float = 0.4  # default fade of presets, emotions and hold buttons, seconds
    easing: str = "smooth"
    modes: dict[str, str] = field(default_factory=dict)  # group or target → "add" | "override"
    queue: int = 4096
    max_events_per_frame: int = 512  # a few milliseconds of the render thread, even under a flood
    reload_interval: float = 1.0  # seconds between checks of the presets files
    max_manual: int = 256  # manual controls held at once (the vocabulary has about 160)


class _Fader:
    """Values easing from where they are now to a target over a duration."""

    __slots__ = ("dur", "ease", "start", "t0", "target")

    def __init__(self, value: NDArray[np.float64], ease: Callable[[float], float]) -> None:
        self.start = value.astype(np.float64)
        self.target = self.start.copy()
        self.t0 = 0.0
        self.dur = 0.0
        self.ease = ease

    def value(self, now: float) -> NDArray[np.float64]:
        if self.dur <= 0 or now >= self.t0 + self.dur:
            return self.target
        x = max(0.0, (now - self.t0) / self.dur)
        return self.start + (self.target - self.start) * self.ease(x)

    def set(self, now: float, target: NDArray[np.float64], dur: float) -> None:
        self.start = self.value(now).copy()
        self.target = target.astype(np.float64)
        self.t0 = now
        self.dur = dur

    def done(self, now: float) -> bool:
        return self.dur <= 0 or now >= self.t0 + self.dur


@dataclass
class _Manual:
    target: str
    basis: NDArray[np.float64]  # (k, 120)
    mask: NDArray[np.bool_]  # channels touched
    override: NDArray[np.bool_]  # channels where this control overrides
    values: _Fader
    weight: _Fader
    releasing: bool = False


@dataclass
class _Level:
    kind: str
    name: str
    weight: _Fader
    vector: F32


class Mixer:
    """Combines the driven face with controls; see the module docstring for the layer order."""

    def __init__(
        self,
        arkit: ArkitMap,
        library: PresetLibrary,
        idle: IdleLife | None = None,
        settings: MixerSettings | None = None,
    ) -> None:
        self.arkit = arkit
        self.library = library
        self.idle = idle if idle is not None else IdleLife()
        self.settings = settings or MixerSettings()
        self._ease = EASINGS.get(self.settings.easing, EASINGS["smooth"])
        self._lock = threading.Lock()
        self._queue: deque[Command] = deque(maxlen=self.settings.queue)
        self._manual: dict[str, _Manual] = {}
        self._levels: dict[tuple[str, str], _Level] = {}
        self._generation = library.generation
        self.parser = CommandParser(arkit, library, self.settings.fade)
        self._next_reload = 0.0
        self._now = 0.0
        self._mixed = FaceParams.neutral()
        self._control_delta = np.zeros(VEC, np.float32)
        self.counters = {"accepted": 0, "rejected": 0, "unknown": 0, "dropped": 0, "applied": 0, "errors": 0,
                         "manual_full": 0}
        self.last_error = ""
        self._override_default = np.array(
            [self._mode_of_group(g) == "override" for g in _GROUPS], dtype=bool
        )[_GROUP_OF]

    @classmethod
    def from_config(cls, config: Config, *, avatar_name: str, seed: int | None = None) -> Mixer:
        """The daemon's mixer for `avatar_name` ("demo" or a FLAME avatar): the ARKit map and presets of the
        [presets] folder, the [idle] and [mixer] sections; `seed` fixes idle life (default: random)."""
        folder = config.presets.dir
        m = config.mixer
        settings = MixerSettings(fade=float(m.fade_ms) / 1000.0, easing=str(m.easing), modes=dict(m.modes),
                                 max_manual=m.max_manual)
        idle = IdleLife.from_config(config.idle, seed=int(time.time_ns() % 2**32) if seed is None else seed)
        library = PresetLibrary(folder, max_captured=config.presets.max_captured)
        return cls(load_for_avatar(avatar_name, folder), library, idle, settings)

    # ---- configuration -------------------------------------------------------------------------------
    def _mode_of_group(self, group: str) -> str:
        return self.settings.modes.get(group, DEFAULT_MODES[group])

    def _override_mask(self, target: str, mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
        mode = self.settings.modes.get(target)
        if mode is not None:
            return mask & (mode == "override")
        return mask & self._override_default

    # ---- queueing (any thread) -----------------------------------------------------------------------
    def accept(self, event: ControlEvent) -> Command:
        """Parse and queue an event (thread-safe); raises ControlError with the reason, counted like `apply`."""
        try:
            cmd = self.parser.parse(event)
        except ControlError as exc:
            with self._lock:
                self.counters["rejected"] += 1
                if isinstance(exc, UnknownTarget):
                    self.counters["unknown"] += 1
                self.last_error = f"{event.target[:80]}: {exc}"
            raise
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self.counters["dropped"] += 1
            self._queue.append(cmd)
            self.counters["accepted"] += 1
        return cmd

    def apply(self, event: ControlEvent) -> bool:
        """Queue a control event (thread-safe, never raises); False when it was rejected."""
        try:
            self.accept(event)
        except ControlError:
            return False
        except Exception as exc:  # a bug must not reach the control surface's loop
            with self._lock:
                self.counters["rejected"] += 1
                self.last_error = f"{event.target[:80]}: {type(exc).__name__}: {exc}"
            return False
        return True

    # ---- execution (render thread) -------------------------------------------------------------------
    def _run(self, cmd: Command, now: float) -> None:
        if isinstance(cmd, SetManual):
            self._set_manual(cmd, 0.0 if cmd.fade is None else cmd.fade, now)
        elif isinstance(cmd, SetLevel):
            self._set_level(cmd.level, cmd.value, self._fade(cmd.fade), now)
        elif isinstance(cmd, Release):
            self._release(cmd.target, cmd.level, self._fade(cmd.fade), now)
        elif isinstance(cmd, Toggle):
            self._toggle(cmd, self._fade(cmd.fade), now)
        elif isinstance(cmd, Blink):
            self.idle.trigger_blink(now, double=cmd.double)
        elif isinstance(cmd, Reset):
            fade = self._fade(cmd.fade)
            for target in list(self._manual):
                self._release(target, None, fade, now)
            for kind, name in list(self._levels):
                self._set_level(Level(kind, name), 0.0, fade, now)
        elif isinstance(cmd, SetIdle):
            setattr(self.idle.amounts, cmd.feature, cmd.amount)

    def _fade(self, fade: float | None) -> float:
        return self.settings.fade if fade is None else fade

    def _set_manual(self, cmd: SetManual, fade: float, now: float) -> None:
        vals = np.asarray(cmd.values, np.float64)
        m = self._manual.get(cmd.target)
        if m is None and len(self._manual) >= self.settings.max_manual:
            self.counters["manual_full"] += 1
            self.last_error = f"{cmd.target}: {len(self._manual)} manual controls are held (mixer.max_manual); " \
                              "release some first"
            return
        if m is None or m.basis.shape != cmd.basis.shape:
            mask = np.any(cmd.basis != 0, axis=0)
            start = vals if fade <= 0 else np.zeros_like(vals)
            m = _Manual(cmd.target, cmd.basis, mask, self._override_mask(cmd.target, mask),
                        _Fader(start, self._ease), _Fader(np.zeros(1), self._ease))
            self._manual[cmd.target] = m
        m.basis = cmd.basis
        m.releasing = False
        m.values.set(now, vals, fade)
        m.weight.set(now, np.ones(1), fade)

    def _toggle(self, cmd: Toggle, fade: float, now: float) -> None:
        if cmd.level is not None:
            lvl = self._levels.get((cmd.level.kind, cmd.level.name))
            on = lvl is not None and float(lvl.weight.target[0]) > 0.5
            self._set_level(cmd.level, 0.0 if on else 1.0, fade, now)
            return
        m = self._manual.get(cmd.target)
        if m is not None and not m.releasing:
            self._release(cmd.target, None, fade, now)
        elif cmd.press is not None:
            self._set_manual(cmd.press, fade, now)

    def _release(self, target: str, level: Level | None, fade: float, now: float) -> None:
        if level is not None:
            self._set_level(level, 0.0, fade, now)
            return
        m = self._manual.get(target)
        if m is not None:
            m.releasing = True
            m.weight.set(now, np.zeros(1), fade)

    def _set_level(self, level: Level, value: float, fade: float, now: float) -> None:
        kind, name = key = (level.kind, level.name)
        lvl = self._levels.get(key)
        if lvl is None:
            if value <= 0:
                return
            preset = self.library.get(kind, name)
            if preset is None:
                return
            lvl = _Level(kind, name, _Fader(np.zeros(1), self._ease), self.arkit.vector(preset))
            self._levels[key] = lvl
        lvl.weight.set(now, np.array([value]), fade)
        if kind == "emotion" and value > 0:  # emotions are exclusive
            for (k, n), other in self._levels.items():
                if k == "emotion" and n != name and float(other.weight.target[0]) > 0:
                    other.weight.set(now, np.zeros(1), fade)

    def _refresh_presets(self, now: float) -> None:
        if now < self._next_reload:
            return
        self._next_reload = now + self.settings.reload_interval
        self.library.poll_soon()  # file work stays off the render thread; changes show on a later frame
        if self.library.generation != self._generation:
            self._generation = self.library.generation
            for lvl in self._levels.values():
                preset = self.library.get(lvl.kind, lvl.name)
                if preset is not None:
                    lvl.vector = self.arkit.vector(preset)

    def mix(self, driven: FaceParams, now: float) -> FaceParams:
        """The FaceParams to render at media time `now` (called once per frame by the render thread)."""
        base = driven.to_vector().astype(np.float64)
        try:
            out = self._mix(base, driven, now)
        except Exception as exc:  # never take the render loop down; show the driven face instead
            self.counters["errors"] += 1
            self.last_error = f"mix: {type(exc).__name__}: {exc}"
            log.exception("mixer failed; rendering the driven face")
            out = base
        out = np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), _LOWER, _UPPER).astype(np.float32)
        mixed = FaceParams.from_vector(out, pts=driven.pts, audio_time=driven.audio_time)
        with self._lock:
            self._mixed = mixed
            self._now = now
        return mixed

    def _mix(self, base: NDArray[np.float64], driven: FaceParams, now: float) -> NDArray[np.float64]:
        with self._lock:
            n = min(len(self._queue), self.settings.max_events_per_frame)
            cmds = [self._queue.popleft() for _ in range(n)]
        for cmd in cmds:
            try:
                self._run(cmd, now)
                self.counters["applied"] += 1
            except Exception as exc:
                self.counters["errors"] += 1
                self.last_error = f"{type(cmd).__name__}: {type(exc).__name__}: {exc}"
        self._refresh_presets(now)
        out = base.copy()
        # Presets and emotions add.
        for key, lvl in list(self._levels.items()):
            w = float(lvl.weight.value(now)[0])
            if w != 0.0:
                out += w * lvl.vector
            elif lvl.weight.done(now):
                del self._levels[key]
        # Manual controls: add or override, per channel.
        add = np.zeros(VEC)
        num = np.zeros(VEC)
        wsum = np.zeros(VEC)
        held = np.zeros(VEC)
        for target, m in list(self._manual.items()):
            w = float(m.weight.value(now)[0])
            if m.releasing and w <= 0.0 and m.weight.done(now):
                del self._manual[target]
                continue
            contrib = m.values.value(now) @ m.basis
            ov = m.override
            add += np.where(ov, 0.0, w * contrib)
            num += np.where(ov, w * contrib, 0.0)
            wsum += np.where(ov, w, 0.0)
            held = np.maximum(held, np.where(m.mask, w, 0.0))
        out += add
        W = np.minimum(wsum, 1.0)
        target_vals = np.divide(num, wsum, out=np.zeros(VEC), where=wsum > 0)
        out = (1.0 - W) * out + W * target_vals
        self._control_delta = (out - base).astype(np.float32)
        # Idle life where no manual control holds the channel.
        speaking = min(abs(float(driven.jaw[0])) / 0.08, 1.0)
        out += self.idle.step(now, speaking) * (1.0 - held)
        idle_blink, manual_blink = self.idle.blink(now)
        s = L["eyelids"][0]
        lids = out[s : s + 2]
        idle_blink_per_eye = idle_blink * (1.0 - held[s : s + 2])
        closure = np.maximum(idle_blink_per_eye, manual_blink)
        out[s : s + 2] = lids + (1.0 - lids) * closure
        return out

    # ---- inspection ----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-able: "manual" (current value of each manual control by name, presets and emotions by
        "preset/NAME" / "emotion/NAME"), "mixed" (the FaceParams groups last rendered), counters."""
        with self._lock:
            now = self._now
            mixed = self._mixed
            manual: dict[str, Any] = {}
            for target, m in list(self._manual.items()):  # the render thread adds and removes entries
                v = m.values.value(now) * float(m.weight.value(now)[0])
                manual[target] = round(float(v[0]), 5) if v.shape[0] == 1 else [round(float(x), 5) for x in v]
            for (kind, name), lvl in list(self._levels.items()):
                manual[f"{kind}/{name}"] = round(float(lvl.weight.value(now)[0]), 5)
            counters = dict(self.counters)
            pending = len(self._queue)
            last_error = self.last_error
        mixed_json: dict[str, Any] = {k: np.round(getattr(mixed, k).astype(np.float64), 5).tolist() for k in L}
        mixed_json["pts"] = mixed.pts
        return {
            "time": now,
            "manual": manual,
            "mixed": mixed_json,
            "idle": {"blink": self.idle.amounts.blink, "gaze": self.idle.amounts.gaze, "sway": self.idle.amounts.sway},
            "counters": counters,
            "pending": pending,
            "last_error": last_error,
            "avatar_map": self.arkit.name,
        }

    def control_delta(self) -> F32:
        """What presets, emotions and manual controls add to the driven face (what `capture` saves)."""
        with self._lock:
            return self._control_delta.copy()

    def capture(self, name: str) -> str:
        return str(self.library.capture(name, self.control_delta()))
