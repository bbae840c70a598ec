"""Everything an outsider can make the daemon store is bounded: control names are canonical before they become
keys (a flood of case variants and unknown names over OSC stores nothing new), manual controls have a cap,
preset names and their number are checked, preset files are read and written off the event loop, and JSON
bodies are bounded in size, depth and numbers (400 with a fix, never 500)."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterable

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.controls.vocabulary import ARKIT_NAMES as ARKIT
from tests.security.daemon import Answer, DaemonProcess, health_probe, wait_for

JSON_ENDPOINTS = ("/api/control", "/api/presets/apply", "/api/presets/capture", "/api/mute", "/api/freeze",
                  "/api/idle", "/api/audio/source", "/api/audio/output", "/api/passthrough", "/api/webrtc/offer",
                  "/api/midi/learn/start", "/api/midi/learn/assign")


def send_osc(port: int, messages: Iterable[tuple[str, list[float]]], per_bundle: int = 200) -> int:
    """The messages in bundles (a few datagrams, so the flood is far under any packet budget)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    batch: list[bytes] = []
    sent = 0

    def flush() -> None:
        b = OscBundleBuilder(IMMEDIATELY)
        for m in batch:
            b.add_content(m)  # type: ignore[arg-type]
        sock.sendto(b.build().dgram, ("127.0.0.1", port))
        batch.clear()

    for address, values in messages:
        m = OscMessageBuilder(address)
        for v in values:
            m.add_arg(float(v), "f")
        batch.append(m.build())  # type: ignore[arg-type]
        sent += 1
        if len(batch) == per_bundle:
            flush()
    if batch:
        flush()
    sock.close()
    return sent


def processed(daemon: DaemonProcess) -> int:
    c = daemon.state()["counters"]
    return int(c["accepted"]) + int(c["rejected"])


def reset(daemon: DaemonProcess) -> None:
    assert daemon.post_json("/api/control", {"target": "reset", "values": [0]}).status == 200
    wait_for(lambda: not daemon.state()["manual"], 20, "manual controls released")


def assert_bad_request(answer: Answer, status: int = 400) -> None:
    assert answer.status == status, answer
    body = answer.json
    assert isinstance(body.get("error"), str) and isinstance(body.get("fix"), str), body


def random_case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)


def test_case_variants_land_on_canonical_names_and_unknown_names_are_not_stored(daemon: DaemonProcess) -> None:
    reset(daemon)
    frames = daemon.frames()
    port = daemon.surface_port("osc")
    start = processed(daemon)
    unknown_before = daemon.state()["counters"].get("unknown", 0)
    assert send_osc(port, [("/avatar/blend/MoUtHsTrEtChRiGhT", [0.5])]) == 1
    wait_for(lambda: daemon.state()["manual"].get("blend/mouthStretchRight") == 0.5, 20,
             "the case variant landed on its canonical name")
    rng = random.Random(11)
    flood = [(f"/avatar/blend/{random_case(rng, name)}", [rng.uniform(0.1, 0.9)]) for name in ARKIT for _ in range(40)]
    unknown = [(f"/avatar/blend/{random_case(rng, 'mouthStretchRight')}{i}", [0.5]) for i in range(300)]
    unknown += [(f"/avatar/blend/{'x' * rng.randint(1, 150)}", [0.5]) for _ in range(100)]
    unknown += [(f"/avatar/flame/expression/{n}", [0.5]) for n in ("100", "-1", "1e3", "٣")]
    mixed = flood + unknown
    rng.shuffle(mixed)
    total = send_osc(port, mixed) + 1
    wait_for(lambda: processed(daemon) - start >= total, 30, "every message processed")
    state = daemon.state()
    keys = set(state["manual"])
    assert keys <= {f"blend/{n}" for n in ARKIT}, sorted(keys - {f"blend/{n}" for n in ARKIT})[:10]
    assert len(keys) <= len(ARKIT)
    assert state["counters"]["unknown"] - unknown_before >= len(unknown)
    # Over HTTP too: the answer names the canonical target.
    answer = daemon.post_json("/api/control", {"target": "BLEND/mOuThStReTcHrIgHt", "values": [0.25]})
    assert answer.status == 200 and answer.json["target"] == "blend/mouthStretchRight", answer
    assert_bad_request(daemon.post_json("/api/control", {"target": "blend/mouthStretchRight2", "values": [1]}))
    assert "blend/mouthStretchRight2" not in daemon.state()["manual"]
    reset(daemon)
    daemon.assert_rendering(frames)


def test_manual_controls_have_a_hard_cap(daemon: DaemonProcess) -> None:
    reset(daemon)
    frames = daemon.frames()
    cap = daemon.config["mixer"]["max_manual"]
    start = processed(daemon)
    total = send_osc(daemon.surface_port("osc"), [(f"/avatar/flame/expression/{i}", [0.1]) for i in range(100)])
    wait_for(lambda: daemon.state()["counters"].get("applied", 0) and processed(daemon) - start >= total, 30,
             "every message processed")
    state = wait_for(lambda: (st := daemon.state())["counters"].get("manual_full", 0) > 0 and st, 20,
                     "controls beyond the cap counted")
    assert len(state["manual"]) <= cap
    reset(daemon)
    daemon.assert_rendering(frames)


def test_preset_names_and_count_are_bounded(daemon: DaemonProcess) -> None:
    frames = daemon.frames()
    (daemon.tmp / "presets" / "captured.toml").unlink(missing_ok=True)
    for name in ("n" * 900_000, "n" * 65, "../../etc/passwd", "a b", "名前", "", "a/b", "x\u0000y", ".hidden"):
        answer = daemon.post_json("/api/presets/capture", {"name": name})
        assert_bad_request(answer)
    assert daemon.post_json("/api/presets/capture", {"name": "a" * 64}).status == 200
    limit = daemon.config["presets"]["max_captured"]
    answers = [daemon.post_json("/api/presets/capture", {"name": f"look_{i}"}) for i in range(limit + 3)]
    ok = [a for a in answers if a.status == 200]
    assert len(ok) == limit - 1  # "aaa...a" took one place
    for refused in answers[len(ok):]:
        assert_bad_request(refused)
        assert str(limit) in refused.json["error"]
    # Saving over an existing name is not a new preset.
    assert daemon.post_json("/api/presets/capture", {"name": "look_0"}).status == 200
    names = {p["name"] for p in daemon.get_json("/api/presets")["presets"]}
    assert f"look_{limit}" not in names and "a" * 64 in names
    (daemon.tmp / "presets" / "captured.toml").unlink()
    daemon.assert_rendering(frames)


def test_a_huge_presets_file_neither_stalls_the_loop_nor_the_picture(daemon: DaemonProcess) -> None:
    frames = daemon.frames()
    captured = daemon.tmp / "presets" / "captured.toml"
    entry = "[{name}]\nraw = {{ expression = [" + ", ".join(["0.1"] * 50) + "] }}\n"
    with open(captured, "w") as f:
        i = 0
        while f.tell() < 18_000_000:
            f.write(entry.format(name=f"p{i}"))
            i += 1
    with health_probe(daemon):
        try:
            answer = daemon.post_json("/api/presets/capture", {"name": "after_the_flood"})
            assert_bad_request(answer)
            assert "captured.toml" in answer.json["error"]
            reload = daemon.post_json("/api/presets/reload", {})
            assert reload.status == 200 and any("captured.toml" in k for k in reload.json["errors"]), reload
        finally:
            captured.unlink()
    daemon.post_json("/api/presets/reload", {})
    daemon.assert_rendering(frames)


def deep(kind: str, depth: int) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def test_json_bombs_are_400_with_a_fix(daemon: DaemonProcess) -> None:
    frames = daemon.frames()
    bombs = [
        deep("array", 50_000),
        deep("object", 50_000),
        deep("array", 100),
        json.dumps({"target": "blend/jawOpen", "values": [1]})[:-1] + ', "x": ' + deep("array", 5000) + "}",
        '{"target": "blend/jawOpen", "values": [' + "9" * 400 + "]}",
        '{"muted": ' + "9" * 400 + "}",
        '{"name": "smile", "value": ' + "1" * 5000 + "}",
        '{"target": "blend/jawOpen", "values": [NaN]}',
        '{"target": "blend/jawOpen", "values": [Infinity]}',
        '{"target": "blend/jawOpen", "values": [1e400]}',
        '{"sway_amount": -1e400}',
        '{"source": "file", "device": ' + "9" * 400 + "}",
        '"just a string"',
        "\xff\xfe{}",
    ]
    for path in JSON_ENDPOINTS:
        for bomb in bombs:
            answer = daemon.request("POST", path, bomb.encode("latin-1"), {"Content-Type": "application/json"})
            assert answer.status == 400, (path, bomb[:60], answer)
            assert_bad_request(answer)
        assert daemon.request("GET", "/health").status == 200
    # Finite but out of range for the field.
    for path, body in (("/api/passthrough", {"delay_ms": 1e308}), ("/api/idle", {"sway_amount": 1e300}),
                       ("/api/control", {"target": "blend/jawOpen", "values": [1, 2, 3, 4, 5, 6, 7, 8, 9]})):
        assert_bad_request(daemon.post_json(path, body))
    status = daemon.status()
    assert status["muted"] is False and status["frozen"] is False
    daemon.assert_rendering(frames)
