"""Avatars for tests whose subject is not the renderer: real `Avatar` implementations with a known cost.

`FlatAvatar` draws the face parameters as a flat cartoon in well under a millisecond, so a test of controls,
outputs or the pipeline measures those and not how fast this machine splats Gaussians. Its `render_seconds`
(a class-wide setting, so a daemon in another process can be given it) makes it a renderer that takes that
long per frame, from frame `slow_after` on: a GPU that is busy, or a machine so loaded that the renderer is
starved. A starved render ends early when the avatar is closed, as a real one would be abandoned.

Tests put it in the daemon through the registry's table of driver names (`as_demo_avatar`): the daemon builds
it with `from_config` as it builds any avatar.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from bridge.core.face_params import FaceParams
from bridge.core.interfaces import RenderedImage

SKIN = np.array([205, 160, 140], np.uint8)
DARK = np.array([40, 20, 25], np.uint8)
EDGE_PX = 3.0  # width of the soft rim


class FlatAvatar:
    """A head-shaped disc: it turns with the head's yaw, its mouth opens with the jaw and widens with a smile,
    its eyes close with the eyelids and its brows rise with expression 1. Alpha is the disc, with a soft rim."""

    name = "demo"
    render_seconds = 0.0  # time each render takes (released to other threads, as a GPU wait would be)
    slow_after = 0  # renders before that are instant
    slow_for: int | None = None  # renders from slow_after on that are slow (None: all of them)
    expression_channels: ClassVar[dict[str, int]] = {"smile": 0, "brow_raise": 1, "frown": 2, "pucker": 3, "wide": 4}

    def __init__(self, width: int = 128, height: int = 128, transparent: bool = False,
                 background: tuple[float, float, float] = (0.0, 0.0, 0.0), device: str = "cpu", **_: Any) -> None:
        self.width, self.height, self.device = int(width), int(height), "cpu"
        self.transparent = bool(transparent)
        self.background = (np.zeros(3) if transparent else np.asarray(background) * 255).astype(np.uint8)
        self._y, self._x = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
        self.renders = 0
        self.closed = threading.Event()

    @classmethod
    def from_config(cls, config: Any, framing: Any = None, **_: Any) -> FlatAvatar:
        """The whole frame (the disc where the framing would put a head is not its concern); inside a scene
        (`framing` given) it renders alpha over black, as the real heads do."""
        a = config.avatar
        background = a.background if isinstance(a.background, tuple) else (0.0, 0.0, 0.0)
        return cls(config.video.width, config.video.height, a.transparent or framing is not None, background)

    def render(self, params: FaceParams) -> RenderedImage:
        slow = self.renders >= self.slow_after and (self.slow_for is None or
                                                     self.renders < self.slow_after + self.slow_for)
        if self.render_seconds > 0 and slow:
            self.closed.wait(self.render_seconds)
        w, h = self.width, self.height
        cx = w / 2 + float(params.head[1]) * w / 3
        cy = h / 2 - float(params.head[0]) * h / 3
        x, y = (self._x - cx) / (0.35 * w), (self._y - cy) / (0.42 * h)
        # Coverage ramps over EDGE_PX pixels at the rim, as a splatted head's soft edge does.
        inside_px = (1.0 - np.sqrt(x * x + y * y)) * 0.38 * min(w, h)
        coverage = np.clip(inside_px / EDGE_PX + 0.5, 0.0, 1.0)
        head = coverage >= 0.5
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:] = self.background
        rgb[head] = SKIN
        smile = float(np.clip(params.expression[0], -1, 1))
        mouth_h = 0.05 + 0.8 * max(0.0, float(params.jaw[0]))
        mouth = (np.abs(x) < 0.35 + 0.2 * smile) & (np.abs(y - 0.45) < mouth_h / 2 + 0.03)
        rgb[mouth & head] = DARK
        for side in (-1, 1):
            lid = float(np.clip(params.eyelids[0 if side < 0 else 1], 0, 1))
            eye = (np.abs(x - 0.35 * side) < 0.12) & (np.abs(y + 0.2) < 0.08 * (1.0 - lid) + 0.005)
            rgb[eye & head] = DARK
            brow = (np.abs(x - 0.35 * side) < 0.18) & (np.abs(y + 0.42 + 0.2 * float(params.expression[1])) < 0.03)
            rgb[brow & head] = DARK
        self.renders += 1
        # The rim blends into the background (premultiplied colour when transparent: the background is black).
        a = coverage[..., None]
        rgb = (rgb.astype(np.float32) * a + self.background.astype(np.float32) * (1.0 - a) + 0.5).astype(np.uint8)
        alpha = (coverage * 255.0 + 0.5).astype(np.uint8) if self.transparent else None
        return RenderedImage(rgb, alpha)

    def close(self) -> None:
        self.closed.set()


class SlowAvatar(FlatAvatar):
    """Takes 50 ms a frame: slower than 60 fps needs, whatever the machine."""

    render_seconds = 0.05


SCENE_SETUP_RENDERS = 1
"""Renders a daemon makes before its stream: the scene renders the neutral head once to put the demo's torso plate
under its neck."""


class StarvedAvatar(FlatAvatar):
    """Renders 25 frames, then its renderer gets no turn for a minute (each render blocks)."""

    render_seconds = 60.0
    slow_after = 25


@contextlib.contextmanager
def as_demo_avatar(target: str = "tests.avatars:FlatAvatar") -> Iterator[None]:
    """Daemons built inside this block render with `target` where the config says the demo avatar."""
    from bridge.runtime import registry

    table = registry.DRIVERS["avatar"]
    before, table["demo"] = table["demo"], target
    try:
        yield
    finally:
        table["demo"] = before


def main(argv: list[str]) -> int:
    """`python -m tests.avatars SECONDS[@AFTER] COMMAND...`: the avatar-bridge CLI with the flat avatar as the
    demo avatar, each render from the AFTER-th on taking SECONDS (for tests that run the daemon as a process)."""
    from bridge.cli import leave, run
    from tests.avatars import FlatAvatar as Registered  # the class the registry loads, not this __main__ copy

    seconds, _, after = argv[0].partition("@")
    Registered.render_seconds, Registered.slow_after = float(seconds), int(after or 0)
    with as_demo_avatar():
        code = run(argv[1:])
    leave(code)  # as the console program does
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
