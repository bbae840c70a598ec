"""The scene from the config: the framing the head avatar renders with, and the wrapper that composites it."""

from __future__ import annotations

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.config import Config
from bridge.core.interfaces import Avatar
from drivers.avatar.scene.avatar import SceneAvatar
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


def scene(config: Config, head: Avatar, framed: HeadFraming, demand: AlphaDemand) -> SceneAvatar:
    """Wrap `head` (made with `framed`): background and torso from [avatar] (blocking: reads their files)."""
    a = config.avatar
    torso = TorsoPlate.load(a.torso) if a.torso is not None else None
    background = open_background(a.background, framed.width, framed.height)
    return SceneAvatar(head, framed, background, demand, torso=torso, transparent=a.transparent)
