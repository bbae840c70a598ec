"""The scene from the config: the framing the head avatar renders with, and the wrapper that composites it."""

from __future__ import annotations

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.config import Config
from bridge.core.interfaces import Avatar
from drivers.avatar.demo.torso import demo_torso
from drivers.avatar.scene.avatar import DeviceHead, SceneAvatar
from drivers.avatar.scene.background import open_background
from drivers.avatar.scene.framing import HeadFraming
from drivers.avatar.scene.torso import TorsoPlate


def framing(config: Config) -> HeadFraming:
    """`[video.framing]`: the preset, with any numbers given overriding it; `avatar.zoom` scales the head."""
    f, v = config.video.framing, config.video
    base = HeadFraming.preset(f.preset, v.width, v.height, config.avatar.zoom)
    return HeadFraming(v.width, v.height,
                       base.head_height if f.head_height is None else f.head_height * config.avatar.zoom,
                       base.eye_line if f.eye_line is None else f.eye_line,
                       base.center_x if f.center_x is None else f.center_x)


def torso(config: Config) -> TorsoPlate | None:
    """`avatar.torso`; without one the demo head gets its own shoulders (made in code) and a FlashAvatar none
    (its body is the user's: `avatar-bridge avatar torso` cuts it from their video)."""
    a = config.avatar
    if a.torso is not None:
        return TorsoPlate.load(a.torso)
    return demo_torso() if a.kind == "demo" else None


def scene(config: Config, head: Avatar, framed: HeadFraming, demand: AlphaDemand) -> SceneAvatar:
    """Wrap `head` (made with `framed`): background and torso from [avatar] (blocking: reads their files); with
    no background set, the studio backdrop."""
    a = config.avatar
    background = open_background(a.background, framed.width, framed.height)
    # A head rendering on a GPU that can leave its region there is composited there too (one read-back).
    device_head = head if isinstance(head, DeviceHead) and head.device.startswith("cuda") else None
    return SceneAvatar(head, framed, background, demand, torso=torso(config), transparent=a.transparent,
                       device_head=device_head)
