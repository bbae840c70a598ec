"""Property-based fuzzing of the daemon's JSON handlers and its SDP intake over real HTTP: whatever the body,
the answer is JSON, never a server error, and a refusal says what was wrong and what to do."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.daemon import Answer, DaemonProcess

FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)
TARGETS = st.sampled_from(["blend/jawOpen", "blend/MOUTHPUCKER", "flame/expression/3", "flame/jaw", "gaze", "head",
                           "preset/smile", "emotion/happy", "hold/preset/smile", "toggle/blend/jawOpen",
                           "release/gaze", "idle/sway", "blink", "reset", "avatar/blend/cheekPuff", "/gaze/"])
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_-./ \x00é", max_size=80)

# Each endpoint with bodies shaped like its own (so the fuzz reaches past the first check) and plain junk.
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "/api/control": {"target": TARGETS | st.text(max_size=60), "values": JSON_VALUES},
    "/api/presets/apply": {"name": st.sampled_from(["smile", "happy", "nope"]) | NAMES,
                           "kind": st.sampled_from(["preset", "emotion", "x"]) | JSON_VALUES,
                           "value": JSON_VALUES, "fade": JSON_VALUES},
    "/api/presets/capture": {"name": NAMES | JSON_VALUES},
    "/api/mute": {"muted": JSON_VALUES},
    "/api/freeze": {"frozen": JSON_VALUES},
    "/api/idle": {"blink": JSON_VALUES, "gaze_amount": JSON_VALUES, "sway": JSON_VALUES, "sway_amount": JSON_VALUES},
    "/api/audio/source": {"source": st.sampled_from(["file", "silence", "nope"]) | JSON_VALUES,
                          "device": JSON_VALUES},
    "/api/passthrough": {"delay_ms": JSON_VALUES | st.just("auto")},
    "/api/webrtc/offer": {"sdp": st.text(max_size=200) | JSON_VALUES, "type": JSON_VALUES},
    "/api/midi/learn/start": {"target": JSON_VALUES},
}


def shaped(path: str) -> st.SearchStrategy[str]:
    fields = FIELDS[path]
    return st.fixed_dictionaries({}, optional=fields).map(lambda d: json.dumps(d, allow_nan=True))


def body_for(path: str) -> st.SearchStrategy[bytes]:
    junk = JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True))
    return (shaped(path) | junk).map(str.encode) | st.binary(max_size=200)


def assert_well_refused(answer: Answer, what: object) -> None:
    # No 5xx at all: nothing here reaches a cap (accepted offers are closed at once), so a 503 would be as
    # wrong as a 500.
    assert 200 <= answer.status < 500, (what, answer)
    body = answer.json
    if answer.status >= 400:
        assert isinstance(body.get("error"), str) and isinstance(body.get("fix"), str), (what, answer)


def restore(daemon: DaemonProcess) -> None:
    for path, body in (("/api/freeze", {"frozen": False}), ("/api/mute", {"muted": False}),
                       ("/api/audio/source", {"source": "file"}), ("/api/passthrough", {"delay_ms": "auto"}),
                       ("/api/control", {"target": "reset", "values": [0]})):
        daemon.post_json(path, body)
    (daemon.tmp / "presets" / "captured.toml").unlink(missing_ok=True)


def test_json_handlers_never_fail(daemon: DaemonProcess) -> None:
    frames = daemon.frames()

    @FUZZ
    @given(path=st.sampled_from(sorted(FIELDS)), data=st.data())
    def check(path: str, data: st.DataObject) -> None:
        body = data.draw(body_for(path))
        answer = daemon.request("POST", path, body, {"Content-Type": "application/json"})
        assert_well_refused(answer, (path, body[:200]))

    try:
        check()
    finally:
        restore(daemon)
    daemon.assert_rendering(frames)


def mutate(offer: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply line edits to an offer: 0 delete, 1 duplicate, 2 replace with junk, 3 insert junk."""
    lines = offer.split("\r\n")
    for op, where, junk in edits:
        if not lines:
            break
        i = where % len(lines)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            lines[i] = junk
        else:
            lines.insert(i, junk)
    return "\r\n".join(lines)


async def test_sdp_intake_never_fails(daemon: DaemonProcess) -> None:
    from tests.security.test_webrtc_sessions import make_offer

    frames = daemon.frames()
    offer = await make_offer()
    junk = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
        ["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=candidate:1 1 udp 1 1.2.3.4 9 typ host", "a=mid:", "c=IN IP4 x",
         "a=fingerprint:sha-256 00", "a=rtpmap:96 VP8/90000", "a=setup:", "a=ice-ufrag:", "v=1", "a=sendonly"])
    edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), junk), max_size=6)

    @settings(FUZZ, max_examples=30)  # each accepted offer builds a real peer connection
    @given(edits=edits, raw=st.binary(max_size=64), as_bytes=st.booleans())
    def check(edits: list[tuple[int, int, str]], raw: bytes, as_bytes: bool) -> None:
        sdp = mutate(offer, edits).encode() + (raw if as_bytes else b"")
        answer = daemon.request("POST", "/whep", sdp, {"Content-Type": "application/sdp"})
        if answer.status == 201:
            assert daemon.request("DELETE", answer.headers["location"]).status == 200
            return
        assert_well_refused(answer, sdp[:300])

    import asyncio

    await asyncio.to_thread(check)
    daemon.assert_rendering(frames)
