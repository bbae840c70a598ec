"""The control grammar parses events into typed commands, with every check done before the mixer sees them."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.controls.arkit_maps import load_for_avatar
from bridge.controls.commands import (
    Blink,
    CommandParser,
    ControlError,
    Level,
    Release,
    Reset,
    SetIdle,
    SetLevel,
    SetManual,
    Toggle,
)
from bridge.controls.presets import PresetLibrary
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import ControlEvent


@pytest.fixture(scope="module")
def parser() -> CommandParser:
    return CommandParser(load_for_avatar("demo"), PresetLibrary(), default_fade=0.4)


def parse(parser: CommandParser, target: str, *values: float) -> object:
    return parser.parse(ControlEvent(target, values))


def test_value_targets(parser: CommandParser) -> None:
    jaw = parse(parser, "/avatar/flame/jaw", 0.3)
    assert isinstance(jaw, SetManual) and jaw.target == "flame/jaw" and jaw.values == (0.3,) and jaw.fade is None
    s = FaceParams.LAYOUT["jaw"][0]
    assert jaw.basis.shape == (1, FaceParams.VECTOR_SIZE) and jaw.basis[0, s] == 1.0
    gaze = parse(parser, "gaze", 5.0, -0.5, 0.2)  # clamped to [-1, 1]; the third value is the fade
    assert isinstance(gaze, SetManual) and gaze.values == (1.0, -0.5) and gaze.fade == 0.2
    blend = parse(parser, "blend/JAWOPEN")  # names in any case; no value means fully on
    assert isinstance(blend, SetManual) and blend.values == (1.0,)
    assert np.array_equal(blend.basis[0], load_for_avatar("demo").delta("jawOpen"))


def test_presets_emotions_and_triggers(parser: CommandParser) -> None:
    assert parse(parser, "preset/smile", 0.5, 2.0) == SetLevel(Level("preset", "smile"), 0.5, 2.0)
    assert parse(parser, "preset/happy") == SetLevel(Level("emotion", "happy"), 1.0, None)  # emotions are presets
    assert parse(parser, "blink", 2.0) == Blink(double=True)
    assert parse(parser, "reset", 0.5) == Reset(0.5)
    assert parse(parser, "idle/sway", 9.0) == SetIdle("sway", 3.0)


def test_hold_toggle_release(parser: CommandParser) -> None:
    pressed = parse(parser, "hold/preset/smile", 1.0)
    assert pressed == SetLevel(Level("preset", "smile"), 1.0, 0.4)  # a held button fades by default
    assert parse(parser, "hold/preset/smile", 0.0, 0.1) == Release("preset/smile", Level("preset", "smile"), 0.1)
    toggle = parse(parser, "toggle/gaze")
    assert isinstance(toggle, Toggle) and toggle.level is None and isinstance(toggle.press, SetManual)
    assert parse(parser, "release/flame/jaw", 0.3) == Release("flame/jaw", None, 0.3)


@pytest.mark.parametrize(("target", "values", "reason"), [
    ("blend/nope", (1.0,), "unknown ARKit"),
    ("preset/nothing", (), "unknown preset"),
    ("flame/expression/100", (1.0,), "flame/expression/<0-99>"),
    ("toggle/blink", (), "only value targets"),
    ("gaze", (float("nan"),), "NaN"),
    ("gaze", (0.0,) * 9, "too many values"),
    ("x" * 201, (), "too long"),
])
def test_bad_events_are_refused_with_the_reason(parser: CommandParser, target: str, values: tuple[float, ...],
                                                reason: str) -> None:
    with pytest.raises(ControlError, match=reason):
        parser.parse(ControlEvent(target, values))
