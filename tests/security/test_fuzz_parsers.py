"""Property-based fuzzing of the parsers outsiders reach: the control grammar (every OSC, VMC, MIDI and HTTP
event goes through it) and the SDP offer intake. Whatever comes in, the parser either refuses it with its own
error or yields a command on a canonical vocabulary name; the mixer's state never holds anything else and
stays within its cap; an offer is refused or passed without any other exception."""

from __future__ import annotations

import functools
import math
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.controls.arkit_maps import load_for_avatar
from bridge.controls.commands import (
    MODIFIERS,
    ControlError,
    SetLevel,
    SetManual,
    canonical_target,
    command_target,
)
from bridge.controls.idle import IdleAmounts, IdleLife
from bridge.controls.mixer import Mixer, MixerSettings
from bridge.controls.presets import PresetLibrary
from bridge.controls.vocabulary import ARKIT_NAMES
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import ControlEvent
from drivers.output.webrtc.offers import MAX_CANDIDATES, MAX_MEDIA_SECTIONS, OfferRefused, check_offer

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

WORDS = ["blend", "flame", "expression", "jaw", "eyes", "eyelids", "neck", "head", "translation", "gaze", "preset",
         "emotion", "idle", "blink", "sway", "reset", "avatar", "smile", "happy", *MODIFIERS, *ARKIT_NAMES[:12],
         "007", "99", "100", "-1", "٣", ""]


def recase(text: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if flips[i % len(flips)] else c for i, c in enumerate(text)) if flips else text


# Names of the vocabulary in any case, with or without the OSC prefix: what canonical spelling is about.
KNOWN_TARGETS = st.builds(lambda head, name, flips: recase(f"{head}/{name}", flips),
                          st.sampled_from(["blend", "avatar/blend", "/avatar/blend/"]), st.sampled_from(ARKIT_NAMES),
                          st.lists(st.booleans(), min_size=1, max_size=8))
TARGETS = st.one_of(
    KNOWN_TARGETS,
    st.builds(lambda parts, flips: recase("/".join(parts), flips),
              st.lists(st.sampled_from(WORDS), min_size=1, max_size=5), st.lists(st.booleans(), max_size=8)),
    st.text(max_size=60),
    st.text(alphabet=string.ascii_letters + "/", max_size=250),
)
VALUES = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30),
                            st.booleans(), st.text(max_size=5), st.none()), max_size=10)
@functools.cache
def _parts() -> tuple[object, PresetLibrary]:
    return load_for_avatar("demo", None), PresetLibrary()


def fresh_mixer(max_manual: int = 256) -> Mixer:
    """A mixer on the shipped presets and demo map (read once), without idle life."""
    arkit, library = _parts()
    return Mixer(arkit, library, IdleLife(amounts=IdleAmounts(blink=0.0, gaze=0.0, sway=0.0), seed=7),  # type: ignore[arg-type]
                 MixerSettings(max_manual=max_manual))


CANONICAL_MANUAL = ({f"blend/{n}" for n in ARKIT_NAMES} | {f"flame/expression/{i}" for i in range(100)}
                    | {f"flame/{g}" for g in ("jaw", "eyes", "eyelids", "neck", "head", "translation")}
                    | {"gaze", "head"})


@FUZZ
@given(target=TARGETS, values=VALUES)
def test_the_control_grammar_refuses_or_yields_canonical_commands(target: str, values: list[object]) -> None:
    mixer = fresh_mixer()
    try:
        cmd = mixer.parser.parse(ControlEvent(target, tuple(values)))  # type: ignore[arg-type]
    except ControlError:
        return
    name = command_target(cmd)
    assert canonical_target(name) == name, (target, name)  # canonical names are fixed points
    if isinstance(cmd, SetManual):
        assert cmd.target in CANONICAL_MANUAL, (target, cmd.target)
        assert all(math.isfinite(v) for v in cmd.values)
        assert cmd.fade is None or 0.0 <= cmd.fade <= 30.0
    if isinstance(cmd, SetLevel):
        assert 0.0 <= cmd.value <= 1.0 and mixer.library.get(cmd.level.kind, cmd.level.name) is not None


@settings(FUZZ, max_examples=100)
@given(events=st.lists(st.tuples(TARGETS, VALUES), min_size=1, max_size=40),
       known=st.lists(KNOWN_TARGETS, min_size=10, max_size=30))
def test_the_mixer_stores_only_canonical_names_and_stays_under_its_cap(events: list[tuple[str, list[object]]],
                                                                      known: list[str]) -> None:
    """Random events after a burst of valid ones on vocabulary names in any case (more names than the cap)."""
    events = [(target, [0.5]) for target in known] + events
    mixer = fresh_mixer(max_manual=8)
    for target, values in events:
        assert mixer.apply(ControlEvent(target, tuple(values))) in (True, False)  # type: ignore[arg-type]
    for i in range(3):
        out = mixer.mix(FaceParams.neutral(), 0.04 * i)
        assert all(math.isfinite(float(v)) for v in out.to_vector())
    state = mixer.state()
    manual = {k for k in state["manual"] if not k.startswith(("preset/", "emotion/"))}
    assert manual <= CANONICAL_MANUAL and len(manual) <= 8
    counters = state["counters"]
    assert counters["accepted"] + counters["rejected"] == len(events)
    assert counters["unknown"] <= counters["rejected"]


SDP_LINES = st.sampled_from([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=candidate:1 1 udp 1 10.0.0.1 9 typ host", "a=mid:0",
    "a=recvonly", "a=sendonly", "c=IN IP4 0.0.0.0", "a=rtpmap:96 VP8/90000", "",
]) | st.text(max_size=40)


@FUZZ
@given(lines=st.lists(SDP_LINES, max_size=200), newline=st.sampled_from(["\r\n", "\n", "\r"]), head=st.booleans())
def test_the_offer_intake_refuses_or_passes_nothing_else(lines: list[str], newline: str, head: bool) -> None:
    sdp = newline.join(["v=0", *lines] if head else lines)  # half of them start as an offer must
    try:
        check_offer(sdp)
    except OfferRefused as exc:
        assert exc.error and exc.fix
        return
    assert sdp.lstrip().startswith("v=0")
    found = sdp.splitlines()
    assert sum(ln.startswith("m=") for ln in found) <= MAX_MEDIA_SECTIONS
    assert sum(ln.startswith("a=candidate:") for ln in found) <= MAX_CANDIDATES
