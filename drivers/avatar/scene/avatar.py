"""`SceneAvatar`: the `Avatar` the pipeline renders with. It wraps the head avatar (demo or FlashAvatar), which
renders only its region of the frame through the framing's intrinsics, and composites torso and head over the
background into the full frame. While an output wants alpha (`AlphaDemand`), each frame also carries the avatar
alone: its coverage and its colour over black.

The torso plate is placed once from a neutral render: its neck line on the rendered neck's lowest row, scaled
so the necks are as wide. Then it follows the head's reported neck base (`RenderedImage.neck`): its move on
screen and its on-screen turn, so the seam stays closed for ordinary head turns.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import Avatar, NeckPose, RenderedImage
from drivers.avatar.scene.background import BackgroundSource
from drivers.avatar.scene.framing import HeadFraming
from drivers.avatar.scene.layers import (
    Compositor,
    DeviceRegion,
    Layer,
    NumpyCompositor,
    Prepared,
    TorchCompositor,
)
from drivers.avatar.scene.torso import TorsoError, TorsoPlate, neck_line

ROLL_STEP = 0.004  # radians: turned plates are cached per step (a turn of a few degrees reuses a few dozen)
OPAQUE = 128  # alpha above which a pixel counts as the neck when measuring it


def _premultiplied_image(rgba: NDArray[np.uint8]) -> Any:
    """A Pillow image in its premultiplied mode ("RGBa"): resampled as it is (mode "RGBA" would weight the
    colour by alpha once more)."""
    from PIL import Image

    h, w = rgba.shape[:2]
    return Image.frombuffer("RGBa", (w, h), np.ascontiguousarray(rgba).tobytes(), "raw", "RGBa", 0, 1)


def _opaque_alpha(image: RenderedImage) -> NDArray[np.uint8]:
    alpha = np.empty(image.rgb.shape[:2], np.uint8)
    alpha.fill(255)
    return alpha


@runtime_checkable
class DeviceHead(Protocol):
    """A head that can leave its region on its device (CUDA), so the scene composites there and the frame
    crosses to the host once."""

    def render_on_device(self, params: FaceParams) -> DeviceRegion: ...


class PlacedTorso:
    """A torso plate scaled to the rendered neck, anchored in the frame, turned on demand."""

    def __init__(self, plate: TorsoPlate, neck_x: float, neck_y: float, neck_width: float) -> None:
        from PIL import Image

        scale = neck_width / plate.neck_width
        h, w = plate.rgba.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        # Premultiplied colour filtered as it is: right at the edges (no dark or light fringe).
        self.rgba = np.asarray(_premultiplied_image(plate.rgba).resize(size, Image.Resampling.BILINEAR))
        self.anchor = (plate.anchor[0] * size[0] / w, plate.anchor[1] * size[1] / h)
        self.at = (neck_x, neck_y)  # where the anchor goes when the neck is at rest
        self.neck_width = neck_width  # of the rendered neck, in frame pixels

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one placed torso per scene, kept as long as it
    def turned(self, step: int) -> tuple[NDArray[np.uint8], NDArray[np.uint8], float, float]:
        """(colour, alpha, anchor x, anchor y) turned by step * ROLL_STEP about the anchor (read-only arrays)."""
        from PIL import Image

        rgba = self.rgba
        ax, ay = self.anchor
        if step:
            image = _premultiplied_image(rgba).rotate(-np.degrees(step * ROLL_STEP), Image.Resampling.BILINEAR,
                                                           expand=False, center=(ax, ay))
            rgba = np.asarray(image)
        colour, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
        colour.flags.writeable = False
        alpha.flags.writeable = False
        return colour, alpha, ax, ay

    def layer(self, dx: float, dy: float, roll: float) -> Layer:
        colour, alpha, ax, ay = self.turned(round(roll / ROLL_STEP))
        return Layer(colour, alpha, round(self.at[0] + dx - ax), round(self.at[1] + dy - ay))


class SceneAvatar:
    """Implements `Avatar` for the whole frame (see the module docstring)."""

    expression_channels: dict[str, int]

    def __init__(self, head: Avatar, framing: HeadFraming, background: BackgroundSource,
                 demand: AlphaDemand, torso: TorsoPlate | None = None, transparent: bool = False,
                 compositor: Compositor | None = None, device_head: DeviceHead | None = None) -> None:
        """`device_head` (the same head, when it can leave its region on its device) makes the scene composite
        on that device (`TorchCompositor`) with the head's pixels never copied to the host on their own."""
        self.head = head
        self.name = head.name
        self.device = head.device
        self.expression_channels = head.expression_channels
        self.width, self.height = framing.width, framing.height
        self.framing = framing
        self.demand = demand
        self.transparent = transparent
        self._background = background
        self.compositor: Compositor = compositor or (TorchCompositor(head.device) if head.device.startswith("cuda")
                                                     else NumpyCompositor())
        self._device_head = device_head
        self._on_device = TorchCompositor(head.device) if device_head is not None else None
        self._rest: NeckPose | None = None
        self._prepared: Prepared | None = None
        self.torso: PlacedTorso | None = None
        if torso is not None:
            self._place_torso(torso)

    def _place_torso(self, plate: TorsoPlate) -> None:
        """Render the neutral head once and put the plate's neck line on its neck."""
        image = self.head.render(FaceParams.neutral())
        alpha = image.alpha if image.alpha is not None else _opaque_alpha(image)
        try:
            x, y, width = neck_line(alpha >= OPAQUE)
        except TorsoError:
            raise TorsoError("the head renders nothing to put a torso under; check the framing") from None
        self._rest = image.neck
        self.torso = PlacedTorso(plate, image.origin[0] + x, image.origin[1] + y, width)

    def neck_motion(self, neck: NeckPose | None) -> tuple[float, float, float]:
        """(dx, dy, roll) of the neck base since the rest pose, in frame pixels and radians."""
        if neck is None or self._rest is None:
            return 0.0, 0.0, 0.0
        return neck.x - self._rest.x, neck.y - self._rest.y, neck.roll - self._rest.roll

    @property
    def background(self) -> BackgroundSource:
        return self._background

    def set_background(self, source: BackgroundSource) -> BackgroundSource:
        """Show `source` from the next frame on; returns the previous one (the caller closes it)."""
        old, self._background = self._background, source
        return old

    def render(self, params: FaceParams) -> RenderedImage:
        if self._device_head is not None and self._on_device is not None:
            return self._render_on_device(self._device_head, self._on_device, params)
        image = self.head.render(params)
        alpha = image.alpha if image.alpha is not None else _opaque_alpha(image)
        head = Layer(image.rgb, alpha, image.origin[0], image.origin[1])
        torso = self.torso.layer(*self.neck_motion(image.neck)) if self.torso is not None else None
        background = None if self.transparent else self._background.frame(time.monotonic())
        still = background is None or not background.flags.writeable  # a still picture is read-only
        if still and torso is not None and isinstance(self.compositor, NumpyCompositor):
            prepared = self._prepared_under(self.compositor, background, torso)
            out = self.compositor.compose_over(prepared, [head], self.demand.wanted)
        else:
            layers = [head] if torso is None else [torso, head]
            out = self.compositor.compose(background, layers, self.width, self.height, self.demand.wanted)
        return RenderedImage(out.rgb, out.alpha, neck=image.neck, foreground=out.foreground)

    def _prepared_under(self, compositor: NumpyCompositor, background: NDArray[np.uint8] | None, torso: Layer
                        ) -> Prepared:
        """Background and torso composited once while neither moves (a still picture, the torso where it was):
        each frame then only copies them and draws the head's region."""
        key = (id(background), id(torso.rgb), torso.x0, torso.y0)
        if self._prepared is None or self._prepared.key != key:
            self._prepared = compositor.prepare(background, [torso], self.width, self.height, key)
        return self._prepared

    def _render_on_device(self, head: DeviceHead, compositor: TorchCompositor, params: FaceParams
                          ) -> RenderedImage:
        region = head.render_on_device(params)
        layers = [self.torso.layer(*self.neck_motion(region.neck))] if self.torso is not None else []
        background = None if self.transparent else self._background.frame(time.monotonic())
        out = compositor.compose(background, layers, self.width, self.height, self.demand.wanted, on_device=region)
        return RenderedImage(out.rgb, out.alpha, neck=region.neck, foreground=out.foreground)

    def close(self) -> None:
        self._background.close()
        self.head.close()

    def info(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "background": self._background.description,
                "torso": self.torso is not None, "head": {"width": self.head.width, "height": self.head.height}}
