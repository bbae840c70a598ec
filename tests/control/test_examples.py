"""The shipped Stream Deck / Companion button set only uses addresses the daemon accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.core.interfaces import ControlEvent
from drivers.control.osc import OscControlSurface
from tests.controls.conftest import make_mixer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_streamdeck_buttons_are_accepted_by_the_osc_server() -> None:
    data = json.loads((EXAMPLES / "streamdeck" / "buttons.json").read_text())
    mixer = make_mixer()
    server = OscControlSurface("127.0.0.1", 0, state=mixer.state, tcp=False)

    def emit(event: ControlEvent) -> None:
        mixer.apply(event)

    server._emit = emit
    sent = 0
    for button in data["buttons"]:
        for key in ("press", "release"):
            if key not in button:
                continue
            b = OscMessageBuilder(button[key]["address"])
            for kind, value in button[key]["args"]:
                b.add_arg(value, kind)
            server.handle_datagram(b.build().dgram, ("127.0.0.1", 1), reply=lambda _p: None)
            sent += 1
            assert mixer.counters["rejected"] == 0, (button["label"], mixer.last_error)
    assert server.counters["accepted"] == sent and server.counters["unknown"] == 0


def test_companion_table_uses_the_same_addresses() -> None:
    table = (EXAMPLES / "companion" / "README.md").read_text()
    buttons = json.loads((EXAMPLES / "streamdeck" / "buttons.json").read_text())["buttons"]
    addresses = {b["press"]["address"] for b in buttons}
    for path in re.findall(r"`(/avatar/[^`]+)`", table):
        if "<" not in path:
            assert path in addresses or path.startswith("/avatar/release/"), path
