"""The control grammar: a `ControlEvent` (target + values, from OSC, VMC, MIDI or HTTP) parsed into one typed
command the mixer executes.

Targets are those of `vocabulary` (``blend/jawOpen``, ``flame/jaw``, ``gaze``, ``preset/happy``, ``blink``,
...). A trailing value is a fade time in seconds where the target fades; ``hold/``, ``toggle/`` and
``release/`` wrap any value target. Parsing validates everything (names, counts, finite numbers, ranges), so
a command that reaches the mixer is always executable; a bad event raises `ControlError` with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from bridge.controls.arkit_maps import ArkitMap
from bridge.controls.presets import PresetLibrary
from bridge.controls.vocabulary import GAZE_MAX_PITCH, GAZE_MAX_YAW, arkit_name, value_range
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import ControlEvent

VEC = FaceParams.VECTOR_SIZE
L = FaceParams.LAYOUT
MAX_TARGET = 200
MAX_VALUES = 8
MAX_FADE_S = 30.0


class ControlError(ValueError):
    """An event that does not fit the vocabulary (counted and ignored by surfaces)."""


class UnknownTarget(ControlError):
    """A name the vocabulary does not have: refused and counted, never stored."""


@dataclass(frozen=True)
class Level:
    """A named preset or emotion, whose weight fades between 0 and 1."""

    kind: str  # "preset" | "emotion"
    name: str


@dataclass(frozen=True)
class SetManual:
    """Drive FaceParams channels directly: `values` (one per row of `basis`) over `fade` seconds."""

    target: str
    values: tuple[float, ...]
    basis: NDArray[np.float64] = field(compare=False, repr=False)  # (k, 120): what each value moves
    fade: float | None = None  # None: at once


@dataclass(frozen=True)
class SetLevel:
    """Fade a preset or emotion to `value` (0..1); None fades over the mixer's default time."""

    level: Level
    value: float
    fade: float | None = None


@dataclass(frozen=True)
class Release:
    """Hand a manual target (or a preset/emotion: fade it to 0) back to lip sync and idle life."""

    target: str
    level: Level | None = None
    fade: float | None = None


@dataclass(frozen=True)
class Toggle:
    """Flip a preset/emotion between 0 and 1, or a manual target between `press` and released."""

    target: str
    level: Level | None = None
    press: SetManual | None = None
    fade: float | None = None


@dataclass(frozen=True)
class Blink:
    double: bool = False


@dataclass(frozen=True)
class Reset:
    """Fade every manual control, preset and emotion out."""

    fade: float | None = None


@dataclass(frozen=True)
class SetIdle:
    """Set an idle-life feature's amount ("blink", "gaze" or "sway"; 0 turns it off)."""

    feature: str
    amount: float


Command = SetManual | SetLevel | Release | Toggle | Blink | Reset | SetIdle


def finite(values: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """The values as floats; raises ControlError on NaN/inf or non-numbers."""
    out = []
    for v in values:
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)):
            raise ControlError(f"value {v!r} is not a number")
        f = float(v)
        if not math.isfinite(f):
            raise ControlError("NaN or infinite value")
        out.append(f)
    return tuple(out)


def clamp(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def _fade_arg(values: tuple[float, ...], index: int) -> float | None:
    if len(values) > index:
        return clamp(values[index], 0.0, MAX_FADE_S)
    return None


MODIFIERS = ("hold", "toggle", "release")
FLAME_GROUPS = tuple(L)  # expression, jaw, eyes, eyelids, neck, head, translation
IDLE_FEATURES = ("blink", "gaze", "sway")  # what idle life animates, each with its own amount


def canonical_target(target: str) -> str:
    """The one spelling of a target in the vocabulary: keywords in lower case, ARKit names as Apple writes
    them, expression indices without leading zeros, no `avatar/` prefix or stray slashes. Done before a target
    becomes a key anywhere, so `blend/MoUtHsTrEtChRiGhT` and `blend/mouthStretchRight` are one control.
    Preset and emotion names keep their spelling (the library decides whether they exist). Raises
    `UnknownTarget` for names the vocabulary does not have."""
    target = target.strip().strip("/")
    if target[:7].lower() == "avatar/":
        target = target[7:]
    if len(target) > MAX_TARGET:
        raise UnknownTarget(f"target too long ({len(target)} characters, at most {MAX_TARGET})")
    head, _, rest = target.partition("/")
    head = head.lower()
    parts = rest.split("/") if rest else []
    if head in MODIFIERS and parts:
        return f"{head}/{canonical_target(rest)}"
    if head in ("blink", "reset", "gaze", "head") and not parts:
        return head
    if head in ("preset", "emotion") and len(parts) == 1 and parts[0]:
        return f"{head}/{parts[0]}"
    if head == "idle" and len(parts) == 1 and parts[0].lower() in IDLE_FEATURES:
        return f"idle/{parts[0].lower()}"
    if head == "blend" and len(parts) == 1:
        name = arkit_name(parts[0])
        if name is None:
            raise UnknownTarget(f"unknown ARKit blendshape {parts[0][:60]!r}")
        return f"blend/{name}"
    if head == "flame" and parts and parts[0].lower() in FLAME_GROUPS:
        group = parts[0].lower()
        if group == "expression":
            index = parts[1] if len(parts) == 2 else ""
            if not (index.isascii() and index.isdigit() and int(index) < 100):
                raise UnknownTarget("use flame/expression/<0-99>")
            return f"flame/expression/{int(index)}"
        if len(parts) == 1:
            return f"flame/{group}"
    raise UnknownTarget(f"unknown control target {target[:60]!r}")


def command_target(cmd: Command) -> str:
    """The canonical target a command acts on (what a control surface is told was applied)."""
    if isinstance(cmd, SetLevel):
        return f"{cmd.level.kind}/{cmd.level.name}"
    if isinstance(cmd, (SetManual, Release, Toggle)):
        return cmd.target
    if isinstance(cmd, SetIdle):
        return f"idle/{cmd.feature}"
    return "blink" if isinstance(cmd, Blink) else "reset"


def _unit_rows(start: int, size: int) -> NDArray[np.float64]:
    b = np.zeros((size, VEC))
    b[np.arange(size), start + np.arange(size)] = 1.0
    return b


class CommandParser:
    """Parses events against an avatar's ARKit map and the preset library; `default_fade` is what a held
    button fades with when it gives no time."""

    def __init__(self, arkit: ArkitMap, library: PresetLibrary, default_fade: float) -> None:
        self.arkit = arkit
        self.library = library
        self.default_fade = default_fade

    def parse(self, event: ControlEvent) -> Command:
        """Validate an event into a command with a canonical target; raises ControlError (`UnknownTarget`
        for names the vocabulary does not have) with a readable reason."""
        target = canonical_target(event.target)
        values = finite(tuple(event.values))
        if len(values) > MAX_VALUES:
            raise ControlError("too many values")
        return self._parse(target, values)

    def _parse(self, target: str, values: tuple[float, ...]) -> Command:
        if target == "blink":
            return Blink(double=bool(values and values[0] > 1.5))
        if target == "reset":
            return Reset(fade=_fade_arg(values, 0))
        for prefix in ("hold/", "toggle/", "release/"):
            if target.startswith(prefix):
                return self._wrapped(prefix[:-1], target[len(prefix) :], values)
        parts = target.split("/")
        if parts[0] in ("preset", "emotion") and len(parts) == 2:
            level = self._level(parts[0], parts[1])
            value = clamp(values[0], 0.0, 1.0) if values else 1.0
            return SetLevel(level, value, fade=_fade_arg(values, 1))
        if parts[0] == "idle" and len(parts) == 2 and parts[1] in IDLE_FEATURES:
            return SetIdle(parts[1], clamp(values[0] if values else 1.0, 0.0, 3.0))
        basis = self._basis(target, len(values))
        k = basis.shape[0]
        lo, hi = value_range(target)
        vals = tuple(clamp(v, lo, hi) for v in values[:k]) + (0.0,) * (k - len(values[:k]))
        if not values:
            vals = (hi if k == 1 else 0.0,) * k
        return SetManual(target, vals, basis, fade=_fade_arg(values, k))

    def _wrapped(self, op: str, inner: str, values: tuple[float, ...]) -> Command:
        """hold/, toggle/ and release/ around a value target (a manual target, a preset or an emotion)."""
        sub = self._parse(inner, ())  # validates the inner target (already canonical)
        if not isinstance(sub, (SetManual, SetLevel)):
            raise ControlError(f"{op}/{inner}: only value targets can be held, toggled or released")
        level = sub.level if isinstance(sub, SetLevel) else None
        inner = command_target(sub)
        if op == "hold":
            pressed = values[0] if values else 1.0
            if pressed > 0.5:
                fade = _fade_arg(values, 1)
                return replace(sub, fade=self.default_fade if fade is None else fade)
            return Release(inner, level, fade=_fade_arg(values, 1))
        if op == "toggle":
            press = sub if isinstance(sub, SetManual) else None
            return Toggle(inner, level, press, fade=_fade_arg(values, 0))
        return Release(inner, level, fade=_fade_arg(values, 0))

    def _level(self, kind: str, name: str) -> Level:
        lib = self.library
        if kind == "preset" and lib.get(kind, name) is None and lib.get("emotion", name) is not None:
            kind = "emotion"  # /avatar/preset/happy: emotions are presets too
        if lib.get(kind, name) is None:
            known = lib.names(kind) + (lib.names("emotion") if kind == "preset" else [])
            shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
            raise UnknownTarget(f"unknown {kind} {name[:60]!r}; known: {shown or 'none'}")
        return Level(kind, name)

    def _basis(self, target: str, n: int) -> NDArray[np.float64]:
        """(k, 120): what each of a manual target's k values moves, given `n` values were sent."""
        parts = target.split("/")
        if parts[0] == "blend" and len(parts) == 2:
            name = arkit_name(parts[1])
            if name is None:
                raise UnknownTarget(f"unknown ARKit blendshape {parts[1][:60]!r}")
            return self.arkit.delta(name)[None, :].astype(np.float64)
        if parts[0] == "flame" and len(parts) >= 2:
            group = parts[1]
            if group == "expression":
                if len(parts) != 3 or not parts[2].isascii() or not parts[2].isdigit() or int(parts[2]) >= 100:
                    raise UnknownTarget("use flame/expression/<0-99>")
                return _unit_rows(int(parts[2]), 1)
            if group in FLAME_GROUPS and len(parts) == 2:
                s, size = L[group]
                if group == "jaw" and n == 1:  # one value: opening about x
                    return _unit_rows(s, 1)
                if group == "eyelids" and n == 1:  # one value: both lids
                    return _unit_rows(s, 2).sum(axis=0, keepdims=True)
                return _unit_rows(s, size)
            raise UnknownTarget(f"unknown FLAME channel {target[:60]!r}")
        if target == "gaze":
            e = L["eyes"][0]
            b = np.zeros((2, VEC))
            b[0, [e + 1, e + 4]] = GAZE_MAX_YAW
            b[1, [e + 0, e + 3]] = -GAZE_MAX_PITCH
            return b
        if target == "head":
            return _unit_rows(L["head"][0], 3)
        raise UnknownTarget(f"unknown control target {target[:60]!r}")
