"""The mixer on its own clock: layers, priorities, fades, hold/release, robustness, determinism."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from bridge.controls.mixer import Mixer
from bridge.controls.vocabulary import GAZE_MAX_YAW
from bridge.core.config import Config
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import ControlEvent as E
from tests.controls.conftest import make_mixer, run

SMILE = 0  # demo channels (presets/arkit_demo.toml [channels])
BROW = 1


def talking(jaw: float) -> FaceParams:
    p = FaceParams.neutral()
    p.jaw[0] = jaw
    return p


def test_preset_fades_in_with_easing_and_adds_to_lip_sync() -> None:
    m = make_mixer()
    m.mix(talking(0.2), 0.0)
    assert m.apply(E("preset/smile"))  # no value: fade in to 1 over the default 0.4 s
    first = m.mix(talking(0.2), 1.0)  # the fade starts at the frame that takes the event
    mid = m.mix(talking(0.1), 1.2)
    end = m.mix(talking(0.3), 1.5)
    assert first.expression[SMILE] == 0.0
    assert 0.3 < mid.expression[SMILE] < 0.7  # smoothstep at half-time: 0.5 of the full value
    assert abs(end.expression[SMILE] - 0.99) < 1e-4
    # The jaw keeps following the driven face (lip sync continues under the smile).
    assert abs(mid.jaw[0] - 0.1) < 1e-6 and abs(end.jaw[0] - 0.3) < 1e-6
    m.apply(E("preset/smile", (0.5, 0.0)))  # value 0.5, no fade
    assert abs(m.mix(talking(0.0), 1.6).expression[SMILE] - 0.495) < 1e-4


def test_manual_override_and_add_per_channel_are_configurable() -> None:
    m = make_mixer()
    m.apply(E("blend/jawOpen", (1.0,)))
    out = m.mix(talking(0.1), 0.0)
    assert abs(out.jaw[0] - (0.1 + 0.35)) < 1e-5  # jaw adds by default
    m2 = make_mixer(modes={"jaw": "override"})
    m2.apply(E("blend/jawOpen", (1.0,)))
    assert abs(m2.mix(talking(0.1), 0.0).jaw[0] - 0.35) < 1e-5
    m3 = make_mixer(modes={"blend/jawOpen": "override"})  # per target
    m3.apply(E("blend/jawOpen", (0.0,)))
    assert abs(m3.mix(talking(0.2), 0.0).jaw[0]) < 1e-6
    # Gaze overrides the eyes by default.
    driven = FaceParams.neutral()
    driven.eyes[:, 1] = 0.3
    m.apply(E("gaze", (-1.0, 0.0)))
    out = m.mix(driven, 0.04)
    assert np.allclose(out.eyes[:, 1], -GAZE_MAX_YAW, atol=1e-5)


def test_hold_and_release_for_momentary_buttons() -> None:
    m = make_mixer(fade=0.2)
    m.apply(E("hold/preset/brows_up", (1.0,)))
    held = run(m, 0.0, 0.5)
    assert held.expression[BROW] > 0.9
    assert m.state()["manual"]["preset/brows_up"] == 1.0
    m.apply(E("hold/preset/brows_up", (0.0,)))
    released = run(m, 0.52, 1.0)
    assert abs(released.expression[BROW]) < 1e-6
    assert "preset/brows_up" not in m.state()["manual"]
    # A manual blend held and released hands the channel back to the driven face.
    m.apply(E("hold/flame/expression/5", (1.0, 0.0)))
    assert m.mix(FaceParams.neutral(), 1.1).expression[5] == 3.0  # hold = the top of the range
    m.apply(E("release/flame/expression/5", (0.1,)))
    run(m, 1.12, 1.5)
    assert "flame/expression/5" not in m.state()["manual"]


def test_toggle_emotions_exclusive_and_reset() -> None:
    m = make_mixer(fade=0.1)
    m.apply(E("emotion/happy"))
    run(m, 0.0, 0.3)
    m.apply(E("emotion/sad"))
    run(m, 0.32, 0.8)
    manual = m.state()["manual"]
    assert manual["emotion/sad"] == 1.0 and "emotion/happy" not in manual
    m.apply(E("toggle/emotion/sad"))
    run(m, 0.84, 1.2)
    assert "emotion/sad" not in m.state()["manual"]
    m.apply(E("toggle/preset/pucker"))
    m.apply(E("blend/browInnerUp", (1.0,)))
    run(m, 1.24, 1.6)
    assert m.state()["manual"]["preset/pucker"] == 1.0
    m.apply(E("reset"))
    out = run(m, 1.64, 2.0)
    assert m.state()["manual"] == {}
    assert np.allclose(out.to_vector(), 0.0, atol=1e-6)


def test_hostile_events_are_counted_clamped_and_never_raise() -> None:
    m = make_mixer()
    bad = [
        E("blend/notAShape", (1.0,)),
        E("blend/jawOpen", (float("nan"),)),
        E("gaze", (float("inf"), 0.0)),
        E("flame/expression/100", (1.0,)),
        E("preset/nope"),
        E("x" * 10_000, (1.0,)),
        E("flame/jaw", tuple(range(50))),
        E("blend/jawOpen", ("1",)),  # type: ignore[arg-type]
    ]
    for ev in bad:
        assert not m.apply(ev)
    assert m.counters["rejected"] == len(bad)
    assert m.apply(E("blend/jawOpen", (1e9,)))  # clamped to 1
    m.apply(E("flame/expression/0", (-1e30,)))
    out = m.mix(FaceParams.neutral(), 0.0)
    assert abs(out.jaw[0] - 0.35) < 1e-6 and out.expression[0] == -3.0
    assert m.last_error


def test_event_flood_is_bounded_per_frame() -> None:
    m = make_mixer(queue=1000, max_events_per_frame=100)
    for i in range(5000):
        m.apply(E("blend/jawOpen", (i % 2,)))
    assert m.counters["dropped"] == 4000
    m.mix(FaceParams.neutral(), 0.0)
    assert m.state()["pending"] == 900


def test_idle_life_blinks_looks_and_sways_and_yields_to_manual_control() -> None:
    m = make_mixer(idle=True)
    lids, yaws, heads = [], [], []
    for i in range(25 * 20):
        out = m.mix(FaceParams.neutral(), i / 25)
        lids.append(out.eyelids[0])
        yaws.append(out.eyes[0, 1])
        heads.append(out.head.copy())
    lids_a = np.array(lids)
    closed = np.flatnonzero(lids_a > 0.8)
    blinks = np.count_nonzero(np.diff(closed) > 1) + (1 if closed.size else 0)
    assert 3 <= blinks <= 15  # about one every 3 s over 20 s
    assert np.ptp(yaws) > 0.02  # saccades
    assert 0.005 < np.abs(np.array(heads)).max() < 0.1  # small sway
    # Manual gaze suppresses idle gaze; eyelids held open suppress idle blinks.
    m.apply(E("gaze", (0.0, 0.0)))
    m.apply(E("flame/eyelids", (0.0,)))
    later = [m.mix(FaceParams.neutral(), 20 + i / 25) for i in range(25 * 10)]
    assert max(abs(o.eyes[0, 1]) for o in later) < 1e-6
    assert max(o.eyelids[0] for o in later) < 1e-6
    # A manual blink still closes them.
    m.apply(E("blink"))
    blink = [m.mix(FaceParams.neutral(), 30 + i / 100).eyelids[0] for i in range(30)]
    assert max(blink) > 0.99


def test_deterministic_for_the_same_events_and_times() -> None:
    def session() -> np.ndarray:
        m = make_mixer(idle=True)
        outs = []
        for i in range(200):
            if i == 10:
                m.apply(E("preset/smile", (0.8, 0.5)))
            if i == 50:
                m.apply(E("gaze", (0.5, 0.2, 0.3)))
            if i == 120:
                m.apply(E("reset"))
            outs.append(m.mix(talking(0.1 * (i % 3)), i / 25).to_vector())
        return np.stack(outs)

    assert np.array_equal(session(), session())


def test_apply_is_thread_safe_while_mixing() -> None:
    m = make_mixer()
    stop = threading.Event()

    def spam() -> None:
        i = 0
        while not stop.is_set():
            m.apply(E("blend/mouthSmileLeft", ((i % 10) / 10,)))
            m.apply(E("gaze", (0.1, -0.1)))
            i += 1

    threads = [threading.Thread(target=spam) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(100):
        m.mix(FaceParams.neutral(), i / 25)
        m.state()
    stop.set()
    for t in threads:
        t.join()
    assert m.counters["errors"] == 0 and m.counters["applied"] > 0


def test_create_mixer_from_config_and_capture(presets_dir: Path) -> None:
    cfg = Config.model_validate({"presets": {"dir": str(presets_dir)}, "mixer": {"fade_ms": 0},
                                 "idle": {"blink": False, "gaze": False, "sway": False}})
    m = Mixer.from_config(cfg, avatar_name="demo", seed=0)
    m.apply(E("preset/smile"))
    m.apply(E("blend/browInnerUp", (1.0,)))
    m.mix(talking(0.2), 0.0)
    path = m.capture("my_look")
    assert Path(path).is_file()
    m.apply(E("reset", (0.0,)))
    m.mix(FaceParams.neutral(), 0.1)
    assert m.apply(E("preset/my_look"))
    out = run(m, 0.2, 0.4)
    assert abs(out.expression[SMILE] - 0.99) < 1e-4 and abs(out.expression[BROW] - 0.6) < 1e-4


def test_preset_address_reaches_an_emotion_of_that_name() -> None:
    """`/avatar/preset/happy` (the issue's Stream Deck example) fades the "happy" emotion in."""
    m = make_mixer()
    assert m.apply(E("preset/happy", ()))
    out = run(m, 0.0, 2.0)
    assert m.state()["manual"] == {"emotion/happy": 1.0}
    assert np.abs(out.expression).max() > 0.1
    assert not m.apply(E("preset/nosuch", ()))
    assert "happy" in m.last_error  # the error lists emotions as well
