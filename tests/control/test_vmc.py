"""VMC input over real UDP: a face-capture stream drives eyes, brows and head through the mixer."""

from __future__ import annotations

import asyncio
import math
import time

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from drivers.control.vmc import VmcControlSurface, unity_quat_to_flame_axis_angle
from tests.control.osc_helpers import MixerTicker
from tests.controls.conftest import make_mixer

BROW = 1


def vmc_frame(blends: dict[str, float], head_quat: tuple[float, float, float, float]) -> OscBundle:
    b = OscBundleBuilder(IMMEDIATELY)
    for name, v in blends.items():
        m = OscMessageBuilder("/VMC/Ext/Blend/Val")
        m.add_arg(name)
        m.add_arg(float(v))
        b.add_content(m.build())  # type: ignore[arg-type]
    b.add_content(OscMessageBuilder("/VMC/Ext/Blend/Apply").build())  # type: ignore[arg-type]
    bone = OscMessageBuilder("/VMC/Ext/Bone/Pos")
    for a in ("Head", 0.0, 1.5, 0.0, *head_quat):
        bone.add_arg(a)
    b.add_content(bone.build())  # type: ignore[arg-type]
    b.add_content(OscMessageBuilder("/VMC/Ext/OK").build())  # type: ignore[arg-type]
    return b.build()


async def test_vmc_stream_drives_eyes_brows_and_head() -> None:
    mixer = make_mixer()
    server = VmcControlSurface("127.0.0.1", 0)
    await server.start(mixer.apply)
    assert server.bound is not None
    client = SimpleUDPClient("127.0.0.1", server.bound[1])
    yaw = 0.3  # Unity yaw about +y
    quat = (0.0, math.sin(yaw / 2), 0.0, math.cos(yaw / 2))
    try:
        with MixerTicker(mixer, fps=25) as ticker:
            for _i in range(30):  # 60 fps stream for half a second
                blends = {"browInnerUp": 1.0, "EyeBlinkLeft": 1.0, "eyeBlinkRight": 0.0,
                          "eyeLookOutLeft": 1.0, "eyeLookInRight": 1.0, "jawopen": 0.0, "Joy": 0.0}
                client.send(vmc_frame(blends, quat))
                await asyncio.sleep(1 / 60)
            end = time.monotonic() + 20  # a bound against hanging, not a speed requirement
            while time.monotonic() < end and ticker.last.expression[BROW] < 0.59:
                await asyncio.sleep(0.02)
            out = ticker.last
            assert abs(out.expression[BROW] - 0.6) < 1e-4  # browInnerUp through the demo map
            assert out.eyelids[0] > 0.99 and out.eyelids[1] < 0.01
            assert out.eyes[0, 1] > 0.3 and out.eyes[1, 1] > 0.3  # both eyes look to the avatar's left
            assert abs(out.head[1] + yaw) < 1e-3  # Unity yaw mirrored into FLAME
    finally:
        await server.stop()
    assert server.counters["applies"] == 30
    # Values are passed on only when they change: 7 blends once each, plus one head event.
    assert mixer.counters["accepted"] == 8
    assert server.counters["malformed"] == 0 and server.counters["ignored"] == 30


def test_vmc_bad_messages_are_counted() -> None:
    s = VmcControlSurface("127.0.0.1", 0)
    got: list[object] = []
    s._emit = got.append
    for args in ([], ["jawOpen"], [1.0, 2.0], ["jawOpen", "x"], ["jawOpen", math.nan]):
        m = OscMessageBuilder("/VMC/Ext/Blend/Val")
        for a in args:
            m.add_arg(a)
        s.handle_datagram(m.build().dgram, ("127.0.0.1", 1))
    s.handle_datagram(b"/VMC/Ext/Bone/Pos\x00\x00\x00,s", ("127.0.0.1", 1))
    assert s.counters["bad_args"] == 5 and s.counters["malformed"] == 1 and not got


def test_unity_quaternion_conversion() -> None:
    assert unity_quat_to_flame_axis_angle(0, 0, 0, 1) == (0.0, 0.0, 0.0)
    a = 0.4
    x, y, z = unity_quat_to_flame_axis_angle(math.sin(a / 2), 0, 0, math.cos(a / 2))  # pitch keeps its sign
    assert abs(x - a) < 1e-9 and abs(y) < 1e-9 and abs(z) < 1e-9
    x, y, z = unity_quat_to_flame_axis_angle(0, 0, -math.sin(a / 2), -math.cos(a / 2))  # -q: roll +a, mirrored
    assert abs(z + a) < 1e-9
