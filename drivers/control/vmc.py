"""VMC protocol input (face-capture apps: iFacialMocap, Waidayo, VSeeFace, Warudo senders...).

``/VMC/Ext/Blend/Val name value`` messages are collected and applied together on ``/VMC/Ext/Blend/Apply``,
as the protocol specifies. Names are ARKit blendshapes (any case) or VRM 0.x presets (A I U E O, Blink,
Blink_L/R, Joy, Angry, Sorrow, Fun, LookUp/Down/Left/Right). ``/VMC/Ext/Bone/Pos Head px py pz qx qy qz qw``
turns the head (Unity's left-handed frame mirrored into FLAME's). Only changed values are passed on, without
fades, so a 60 fps stream costs the mixer little. Other VMC addresses (root, other bones, status) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from bridge.controls.vocabulary import arkit_name
from bridge.core.config import Config
from bridge.core.rotations import quat_to_axis_angle
from drivers.control.osc import MAX_PACKETS_PER_SECOND, OscServerBase, numbers

VRM_ALIASES: dict[str, list[tuple[str, float]]] = {
    "a": [("blend/jawOpen", 1.0)],
    "i": [("blend/jawOpen", 0.25), ("blend/mouthStretchLeft", 0.6), ("blend/mouthStretchRight", 0.6)],
    "u": [("blend/mouthPucker", 1.0), ("blend/jawOpen", 0.15)],
    "e": [("blend/jawOpen", 0.45), ("blend/mouthStretchLeft", 0.3), ("blend/mouthStretchRight", 0.3)],
    "o": [("blend/jawOpen", 0.6), ("blend/mouthFunnel", 0.8)],
    "blink": [("blend/eyeBlinkLeft", 1.0), ("blend/eyeBlinkRight", 1.0)],
    "blink_l": [("blend/eyeBlinkLeft", 1.0)],
    "blink_r": [("blend/eyeBlinkRight", 1.0)],
    "lookup": [("blend/eyeLookUpLeft", 1.0), ("blend/eyeLookUpRight", 1.0)],
    "lookdown": [("blend/eyeLookDownLeft", 1.0), ("blend/eyeLookDownRight", 1.0)],
    "lookleft": [("blend/eyeLookOutLeft", 1.0), ("blend/eyeLookInRight", 1.0)],
    "lookright": [("blend/eyeLookInLeft", 1.0), ("blend/eyeLookOutRight", 1.0)],
    "joy": [("emotion/happy", 1.0)],
    "fun": [("emotion/happy", 0.6)],
    "angry": [("emotion/angry", 1.0)],
    "sorrow": [("emotion/sad", 1.0)],
    "surprised": [("emotion/surprised", 1.0)],
}
MAX_PENDING = 512
HEAD_BONES = ("head",)


def unity_quat_to_flame_axis_angle(qx: float, qy: float, qz: float, qw: float) -> tuple[float, float, float]:
    """A Unity (left-handed, x right of the model) rotation as FLAME axis-angle (x to the model's left):
    mirroring x maps the quaternion to (qx, -qy, -qz, qw)."""
    x, y, z = quat_to_axis_angle(np.array([qw, qx, -qy, -qz])).tolist()
    return (x, y, z)


class VmcControlSurface(OscServerBase):
    name = "vmc"

    def __init__(self, host: str = "127.0.0.1", port: int = 39539, allow: Iterable[str] = (),
                 max_packets_per_second: float = MAX_PACKETS_PER_SECOND) -> None:
        super().__init__(host, port, allow, tcp=False, max_packets_per_second=max_packets_per_second)
        self._pending: dict[str, float] = {}
        self._sent: dict[str, float] = {}
        self._head: tuple[float, float, float] | None = None
        self.counters["applies"] = 0
        self.counters["ignored"] = 0

    @classmethod
    def from_config(cls, config: Config) -> VmcControlSurface:
        """The [vmc] section; senders beyond loopback are allowed by the same osc.allow list as OSC."""
        cfg = config.vmc
        return cls(cfg.host, cfg.port, config.osc.allow, max_packets_per_second=cfg.max_packets_per_second)

    def handle_message(self, address: str, args: list[Any], reply: Callable[[bytes], None]) -> None:
        if address == "/VMC/Ext/Blend/Val":
            if len(args) != 2 or not isinstance(args[0], str):
                self._bad("bad_args", "/VMC/Ext/Blend/Val takes a name and a value")
                return
            vals = numbers(args[1:])
            if vals is None:
                self._bad("bad_args", f"/VMC/Ext/Blend/Val {args[0][:40]}: value must be a finite number")
                return
            targets = self._targets(args[0])
            if targets is None:
                self.counters["ignored"] += 1
                return
            value = min(max(vals[0], 0.0), 1.0)
            for target, factor in targets:
                if target in self._pending or len(self._pending) < MAX_PENDING:
                    # Several VRM names may feed one target (A and O both open the jaw): keep the largest.
                    self._pending[target] = max(self._pending.get(target, 0.0), value * factor)
        elif address == "/VMC/Ext/Blend/Apply":
            self._apply()
        elif address == "/VMC/Ext/Bone/Pos":
            if len(args) != 8 or not isinstance(args[0], str):
                self._bad("bad_args", "/VMC/Ext/Bone/Pos takes a bone name and 7 numbers")
                return
            if args[0].lower() not in HEAD_BONES:
                return
            vals = numbers(args[1:])
            if vals is None:
                self._bad("bad_args", "/VMC/Ext/Bone/Pos Head: values must be finite numbers")
                return
            head = unity_quat_to_flame_axis_angle(*vals[3:7])
            if self._head is None or max(abs(a - b) for a, b in zip(head, self._head)) > 1e-4:
                self._head = head
                self.emit("head", head)
        elif address.startswith("/VMC/"):
            self.counters["ignored"] += 1
        else:
            self._bad("unknown", f"unknown address {address[:80]!r} on the VMC port")

    def _targets(self, name: str) -> list[tuple[str, float]] | None:
        canonical = arkit_name(name)
        if canonical is not None:
            return [(f"blend/{canonical}", 1.0)]
        return VRM_ALIASES.get(name.lower())

    def _apply(self) -> None:
        self.counters["applies"] += 1
        pending, self._pending = self._pending, {}
        for target, value in pending.items():
            if abs(self._sent.get(target, -1.0) - value) > 1e-4:
                self._sent[target] = value
                self.emit(target, (value, 0.0))  # no fade: the sender streams
