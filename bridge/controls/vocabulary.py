"""The control vocabulary: every name a control surface (OSC, VMC, MIDI, the HTTP panel) can address.

Targets are slash paths, e.g. ``blend/jawOpen``, ``flame/expression/3``, ``gaze``, ``preset/happy``. Each
takes a fixed number of float values plus, for fading targets, an optional trailing fade time in seconds.
Prefixes ``hold/`` (press = 1, release = 0, for momentary buttons), ``toggle/`` and ``release/`` wrap any
value target. The same table is served as JSON by ``GET /api/controls`` and documented in docs/controls.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.core.arkit import ARKIT_NAMES
from bridge.core.face_params import FaceParams

_ARKIT_LOWER = {n.lower(): n for n in ARKIT_NAMES}

# Safe ranges of the rendered FaceParams, per group (applied to the mixed output).
CHANNEL_LIMITS: dict[str, tuple[float, float]] = {
    "expression": (-4.0, 4.0),
    "jaw": (-0.6, 0.6),
    "eyes": (-0.8, 0.8),
    "eyelids": (-0.5, 1.0),
    "neck": (-1.0, 1.0),
    "head": (-1.2, 1.2),
    "translation": (-0.5, 0.5),
}

# Gaze: `gaze x y` with x, y in [-1, 1] (x > 0: the avatar looks to its left, i.e. the viewer's right; y > 0: up).
GAZE_MAX_YAW = 0.35
GAZE_MAX_PITCH = 0.25


@dataclass(frozen=True)
class ControlSpec:
    """One entry of the vocabulary: how many values it takes, their range, whether it fades by default."""

    pattern: str
    args: tuple[str, ...]
    lo: float
    hi: float
    description: str
    fades: bool = False  # True: default fade time applies when no trailing fade value is given
    momentary: bool = False  # no value: a trigger (blink, reset)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.pattern,
            "args": list(self.args),
            "range": [self.lo, self.hi],
            "fades": self.fades,
            "momentary": self.momentary,
            "description": self.description,
        }


SPECS: tuple[ControlSpec, ...] = (
    ControlSpec("blend/<arkit>", ("value",), 0.0, 1.0, "ARKit blendshape weight (52 names), through the avatar's map"),
    ControlSpec("flame/expression/<0-99>", ("value",), -3.0, 3.0, "raw FLAME expression coefficient"),
    ControlSpec("flame/jaw", ("x", "y", "z"), -0.5, 0.5, "jaw axis-angle in radians (one value: opening about x)"),
    ControlSpec("flame/eyes", ("lx", "ly", "lz", "rx", "ry", "rz"), -0.6, 0.6, "both eye rotations, axis-angle"),
    ControlSpec("flame/eyelids", ("left", "right"), -0.3, 1.0, "eyelid closure, 1 = closed (one value: both)"),
    ControlSpec("flame/neck", ("x", "y", "z"), -0.8, 0.8, "neck axis-angle in radians"),
    ControlSpec("flame/head", ("x", "y", "z"), -1.0, 1.0, "head (global) axis-angle in radians"),
    ControlSpec("flame/translation", ("x", "y", "z"), -0.5, 0.5, "head translation in FLAME units (metres)"),
    ControlSpec("gaze", ("x", "y"), -1.0, 1.0, "look direction: x right(+)/left(-) of the viewer, y up(+)/down(-)"),
    ControlSpec("head", ("pitch", "yaw", "roll"), -1.0, 1.0, "head rotation in radians (pitch > 0 nods down)"),
    ControlSpec("preset/<name>", ("value",), 0.0, 1.0, "named expression preset; no value fades in to 1", fades=True),
    ControlSpec("emotion/<name>", ("value",), 0.0, 1.0, "emotion; exclusive: fading one in fades the others out",
                fades=True),
    ControlSpec("blink", (), 0.0, 1.0, "one blink (a value > 1.5 gives a double blink)", momentary=True),
    ControlSpec("reset", (), 0.0, 1.0, "fade every manual control, preset and emotion out", momentary=True),
    ControlSpec("idle/<blink|gaze|sway>", ("amount",), 0.0, 3.0, "idle motion amount (0 turns it off)"),
    ControlSpec("hold/<target>", ("pressed",), 0.0, 1.0, "momentary button: 1 fades the target in, 0 releases it"),
    ControlSpec("toggle/<target>", (), 0.0, 1.0, "flip a preset/emotion/blend between 0 and 1", momentary=True),
    ControlSpec("release/<target>", (), 0.0, 1.0, "hand the channel back to lip sync and idle motion", momentary=True),
)


def arkit_name(name: str) -> str | None:
    """The canonical ARKit name for `name` (case-insensitive; VMC senders vary in case), or None."""
    return _ARKIT_LOWER.get(name.lower())


_BY_PATTERN = {s.pattern: s for s in SPECS}


def value_range(target: str) -> tuple[float, float]:
    """The range a manual target's values are clamped to: the one in `SPECS` (served by /api/controls and
    documented in docs/controls.md), so what the docs say is what the mixer does."""
    if target.startswith("blend/"):
        spec = _BY_PATTERN["blend/<arkit>"]
    elif target.startswith("flame/expression/"):
        spec = _BY_PATTERN["flame/expression/<0-99>"]
    else:
        spec = _BY_PATTERN[target]
    return spec.lo, spec.hi


def vocabulary(presets: list[str] | None = None, emotions: list[str] | None = None) -> dict[str, Any]:
    """The vocabulary as JSON (served by the daemon)."""
    return {
        "targets": [s.to_json() for s in SPECS],
        "arkit": list(ARKIT_NAMES),
        "flame": {k: list(v) for k, v in FaceParams.LAYOUT.items()},
        "presets": sorted(presets or []),
        "emotions": sorted(emotions or []),
        "modifiers": ["hold/", "toggle/", "release/"],
        "fade": "fading targets take an optional trailing fade time in seconds",
    }
