"""MIDI: mido messages through maps into the mixer; learn mode; garbage; the virtual port where possible."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import mido
import pytest

from bridge.core.face_params import FaceParams
from bridge.core.interfaces import ControlEvent
from drivers.control.midi import (
    Binding,
    MidiControlSurface,
    MidiError,
    MidiMap,
    MidiMapper,
    input_names,
    relative_delta,
    shape,
)
from tests.controls.conftest import make_mixer, run

NANO = Path(__file__).resolve().parents[2] / "presets" / "midi" / "nanokontrol2.toml"


def feed(mapper: MidiMapper, mixer: object, *msgs: mido.Message) -> list[ControlEvent]:
    events = [e for m in msgs for e in mapper.handle(m)]
    for e in events:
        assert mixer.apply(e), (e, mixer.last_error)  # type: ignore[attr-defined]
    return events


def test_nanokontrol2_map_drives_the_mixer() -> None:
    mapper = MidiMapper(MidiMap.load(NANO))
    mixer = make_mixer(fade=0.1)
    feed(mapper, mixer, mido.Message("control_change", control=5, value=127))  # fader 6: browInnerUp
    feed(mapper, mixer, mido.Message("control_change", control=7, value=64))  # fader 8: jawOpen, exp curve
    feed(mapper, mixer, mido.Message("control_change", control=16, value=127),  # knob 1: gaze x
         mido.Message("control_change", control=17, value=0))  # knob 2: gaze y, keeps x
    out = mixer.mix(FaceParams.neutral(), 0.0)
    assert abs(out.expression[1] - 0.6) < 1e-5
    assert abs(out.jaw[0] - 0.35 * (64 / 127) ** 2) < 1e-5
    assert out.eyes[0, 1] > 0.34 and out.eyes[0, 0] > 0.24  # looking to the side and down
    # S1 held: smile fades in; released: fades out.
    feed(mapper, mixer, mido.Message("control_change", control=32, value=127))
    assert run(mixer, 0.04, 0.4).expression[0] > 0.98
    feed(mapper, mixer, mido.Message("control_change", control=32, value=0))
    assert abs(run(mixer, 0.44, 0.8).expression[0]) < 1e-6
    # M1 toggles happy; stop resets everything.
    feed(mapper, mixer, mido.Message("control_change", control=48, value=127),
         mido.Message("control_change", control=48, value=0))
    run(mixer, 0.84, 1.2)
    assert mixer.state()["manual"]["emotion/happy"] == 1.0
    feed(mapper, mixer, mido.Message("control_change", control=42, value=127))
    run(mixer, 1.24, 1.8)
    assert mixer.state()["manual"] == {}


def test_notes_pitchbend_relative_and_curves() -> None:
    mm = MidiMap([
        Binding("note", "preset/smile", control=60),
        Binding("note", "blink", control=61),
        Binding("pitchbend", "flame/expression/4", channel=2, min=-2.0, max=2.0),
        Binding("cc", "blend/mouthSmileLeft", control=10, mode="relative", step=0.1),
        Binding("cc", "blend/mouthSmileRight", control=11, mode="relative", encoding="offset", step=0.1),
    ])
    mapper = MidiMapper(mm)
    ev = mapper.handle(mido.Message("note_on", note=60, velocity=100))
    assert ev[0].target == "hold/preset/smile" and ev[0].values == (1.0,)
    assert mapper.handle(mido.Message("note_on", note=60, velocity=0))[0].values == (0.0,)
    assert mapper.handle(mido.Message("note_on", note=61, velocity=9))[0].target == "blink"
    assert mapper.handle(mido.Message("pitchwheel", channel=2, pitch=8191))[0].values[0] == pytest.approx(2.0)
    assert mapper.handle(mido.Message("pitchwheel", channel=2, pitch=-8192))[0].values[0] == pytest.approx(-2.0)
    assert mapper.handle(mido.Message("pitchwheel", channel=3, pitch=0)) == []  # other channel
    for _ in range(3):
        ev = mapper.handle(mido.Message("control_change", control=10, value=1))
    assert ev[0].values[0] == pytest.approx(0.3)
    assert mapper.handle(mido.Message("control_change", control=10, value=127))[0].values[0] == pytest.approx(0.2)
    assert mapper.handle(mido.Message("control_change", control=11, value=66))[0].values[0] == pytest.approx(0.2)
    assert relative_delta(65, "signed_bit") == -1 and relative_delta(65, "twos") == -63
    assert shape(0.5, "exp") == 0.25 and shape(0.25, "log") == 0.5 and shape(2.0, "linear") == 1.0


def test_learn_binds_a_cc_and_saves_the_map(tmp_path: Path) -> None:
    path = tmp_path / "learned.toml"
    mapper = MidiMapper(MidiMap(path=path))
    mixer = make_mixer()
    # CLI flow: pick the target first, then move a fader.
    mapper.learn_start("blend/browInnerUp")
    assert mapper.handle(mido.Message("control_change", channel=3, control=21, value=90)) == []
    assert mapper.learning is None and path.is_file()
    feed(mapper, mixer, mido.Message("control_change", channel=3, control=21, value=127))
    assert abs(mixer.mix(FaceParams.neutral(), 0.0).expression[1] - 0.6) < 1e-5
    # Panel flow: move a pad, then pick a control.
    mapper.learn_start()
    mapper.handle(mido.Message("note_on", note=36, velocity=80))
    b = mapper.learn_assign("emotion/surprised")
    assert b.kind == "note" and b.mode == "momentary"
    reloaded = MidiMap.load(path)
    assert [(x.kind, x.control, x.channel, x.target) for x in reloaded.bindings] == [
        ("cc", 21, 3, "blend/browInnerUp"), ("note", 36, 0, "emotion/surprised")]
    with pytest.raises(MidiError, match="move a fader"):
        MidiMapper().learn_assign("blink")


def test_garbage_bytes_and_bad_maps(tmp_path: Path) -> None:
    mapper = MidiMapper(MidiMap.load(NANO))
    rng = random.Random(5)
    events = mapper.feed_bytes([rng.randrange(256) for _ in range(50_000)] + [300, -1, "x"])  # type: ignore[list-item]
    mixer = make_mixer()
    for e in events:
        mixer.apply(e)
    mixer.mix(FaceParams.neutral(), 0.0)
    assert mapper.counters["garbage"] == 3 and mapper.counters["messages"] > 1000
    assert mixer.counters["errors"] == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[[binding]]\nkind = "cc"\ncontrol = 300\ntarget = "blink"\n')
    with pytest.raises(MidiError, match="0-127"):
        MidiMap.load(bad)
    bad.write_text('[[binding]]\nkind = "knob"\ncontrol = 3\ntarget = "blink"\nmode = "sideways"\n')
    with pytest.raises(MidiError, match="kind 'knob'.*mode 'sideways'"):
        MidiMap.load(bad)
    bad.write_text('[[binding]]\nkind = "cc"\ncontrol = 3\ntarget = "blink"\ncolour = 1\n')
    with pytest.raises(MidiError, match="colour"):
        MidiMap.load(bad)


async def test_surface_reports_a_missing_backend_or_uses_a_virtual_port() -> None:
    try:
        input_names()
    except MidiError as exc:
        assert "no MIDI backend" in str(exc) and "midi.enabled = false" in str(exc)
        surface = MidiControlSurface(MidiMapper())
        await surface.start(lambda e: None)
        assert surface.status()["error"] and surface.backend_missing
        await surface.stop()
        pytest.skip(f"no MIDI backend on this machine, the virtual-port part cannot run: {exc}")
    # A backend exists: a virtual output port is seen by the surface and its messages arrive.
    try:
        out = mido.open_output("avatar-bridge-test", virtual=True)
    except Exception as exc:  # pragma: no cover - backend without virtual ports (Windows MME)
        pytest.skip(f"this MIDI backend has no virtual ports: {exc}")
    got: list[ControlEvent] = []
    surface = MidiControlSurface(MidiMapper(MidiMap([Binding("cc", "blend/jawOpen", control=7)])),
                                 port_filter="avatar-bridge-test", poll_interval=0.2)
    await surface.start(got.append)
    try:
        for _ in range(50):
            if surface.ports:
                break
            await asyncio.sleep(0.1)
        out.send(mido.Message("control_change", control=7, value=127))
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.05)
        assert got and got[0].target == "blend/jawOpen"
    finally:
        await surface.stop()
        out.close()
