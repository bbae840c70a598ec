"""Compositing one frame from its layers, background ← torso ← head, on the CPU (NumPy) or the GPU (torch).

Both produce the picture for outputs without alpha (`rgb`: everything over the background) and, when alpha is
wanted, the avatar alone: its coverage (`alpha`) and its colour over black (`foreground`, premultiplied), as
outputs that carry alpha take them. The GPU path keeps the background and torso on the device, uploads the
head's region, composites there and copies the result to the host once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from bridge.core.interfaces import NeckPose
from drivers.avatar.scene.composite import over_np, over_torch


@dataclass
class Layer:
    """Premultiplied colour (h, w, 3) and alpha (h, w) uint8 whose top-left pixel sits at (x0, y0)."""

    rgb: NDArray[np.uint8]
    alpha: NDArray[np.uint8]
    x0: int
    y0: int


@dataclass
class DeviceRegion:
    """A head's region left on its device for the compositor: uint8 colour (h, w, 3) premultiplied and alpha
    (h, w), valid until the head renders again; where it sits in the frame; its neck base."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    origin: tuple[int, int]
    neck: NeckPose | None = None


@dataclass
class Composited:
    rgb: NDArray[np.uint8]
    alpha: NDArray[np.uint8] | None = None
    foreground: NDArray[np.uint8] | None = None


class Compositor(Protocol):
    def compose(self, background: NDArray[np.uint8] | None, layers: list[Layer], width: int, height: int,
                with_alpha: bool) -> Composited:
        """`layers` (bottom first) over `background` (None: black); with alpha, the layers alone as well."""


@dataclass
class Prepared:
    """Layers that stay put (a still background and a torso at rest) composited once, read-only: the picture
    over the background (`rgb`), and the layers alone (`foreground` over black, `alpha`) for alpha outputs."""

    rgb: NDArray[np.uint8]
    foreground: NDArray[np.uint8]
    alpha: NDArray[np.uint8]
    key: tuple[object, ...]
    held: tuple[object, ...] = ()  # what `key` names by id, kept alive so no other array takes its id


class NumpyCompositor:
    def prepare(self, background: NDArray[np.uint8] | None, layers: list[Layer], width: int, height: int,
                key: tuple[object, ...]) -> Prepared:
        """`layers` over `background` once, for `compose_over` to start from every frame."""
        out = self.compose(background, layers, width, height, True)
        assert out.alpha is not None and out.foreground is not None
        rgb = out.rgb if background is not None else out.rgb.copy()  # over black, compose shares one array
        for a in (rgb, out.foreground, out.alpha):
            a.flags.writeable = False
        return Prepared(rgb, out.foreground, out.alpha, key, (background, *(layer.rgb for layer in layers)))

    def compose_over(self, prepared: Prepared, layers: list[Layer], with_alpha: bool) -> Composited:
        """`layers` over what `prepared` holds: per frame only a copy of it and the layers' own boxes."""
        rgb = prepared.rgb.copy()
        for layer in layers:
            over_np(rgb, None, layer.rgb, layer.alpha, layer.x0, layer.y0)
        if not with_alpha:
            return Composited(rgb)
        fg, alpha = prepared.foreground.copy(), prepared.alpha.copy()
        for layer in layers:
            over_np(fg, alpha, layer.rgb, layer.alpha, layer.x0, layer.y0)
        return Composited(rgb, alpha, fg)

    def compose(self, background: NDArray[np.uint8] | None, layers: list[Layer], width: int, height: int,
                with_alpha: bool) -> Composited:
        fg: NDArray[np.uint8] | None = None
        alpha: NDArray[np.uint8] | None = None
        if with_alpha:  # the avatar alone over black, and its coverage
            fg = np.zeros((height, width, 3), np.uint8)
            alpha = np.zeros((height, width), np.uint8)
            for layer in layers:
                over_np(fg, alpha, layer.rgb, layer.alpha, layer.x0, layer.y0)
            if background is None:  # the picture is the avatar over black too
                return Composited(fg, alpha, fg)
        rgb = np.zeros((height, width, 3), np.uint8) if background is None else background.copy()
        for layer in layers:
            over_np(rgb, None, layer.rgb, layer.alpha, layer.x0, layer.y0)
        return Composited(rgb, alpha, fg)


class TorchCompositor:
    """The same maths on a torch device. Host layers are uploaded (the head's region), arrays seen before (a
    still background, the torso plate) are kept on the device by identity."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self._kept: dict[int, tuple[NDArray[np.uint8], torch.Tensor]] = {}

    def upload(self, array: NDArray[np.uint8], keep: bool = False) -> torch.Tensor:
        if keep:
            hit = self._kept.get(id(array))
            if hit is not None and hit[0] is array:
                return hit[1]
        if array.flags.writeable:
            t = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
        else:  # a read-only picture: copied (once, when kept), torch holds no view of memory it may not write
            t = torch.tensor(array, device=self.device)
        if keep:
            if len(self._kept) > 8:
                self._kept.clear()
            self._kept[id(array)] = (array, t)
        return t

    def compose_device(self, background: torch.Tensor | None, layers: list[tuple[torch.Tensor, torch.Tensor, int, int]],
                       width: int, height: int, with_alpha: bool) -> torch.Tensor:
        """Everything on the device, in one flat uint8 buffer: rgb (H, W, 3), then foreground (H, W, 3) and
        alpha (H, W) when wanted, each contiguous, so the host gets all of it in one copy."""
        n = height * width
        packed = torch.empty(n * (7 if with_alpha else 3), dtype=torch.uint8, device=self.device)
        rgb = packed[: 3 * n].view(height, width, 3)
        if background is None:
            rgb.zero_()
        else:
            rgb.copy_(background)
        for colour, alpha, x0, y0 in layers:
            over_torch(rgb, None, colour, alpha, x0, y0)
        if with_alpha:
            fg, a = packed[3 * n : 6 * n].view(height, width, 3), packed[6 * n :].view(height, width)
            fg.zero_()
            a.zero_()
            for colour, alpha, x0, y0 in layers:
                over_torch(fg, a, colour, alpha, x0, y0)
        return packed

    def compose(self, background: NDArray[np.uint8] | None, layers: list[Layer], width: int, height: int,
                with_alpha: bool, on_device: DeviceRegion | None = None) -> Composited:
        """`compose_device` for host layers (uploaded; read-only ones kept) and, on top, a region already on the
        device (a head that rendered there: nothing of it crosses to the host but the one result)."""
        bg = None if background is None else self.upload(background, keep=not background.flags.writeable)
        dev_layers = [(self.upload(layer.rgb, keep=not layer.rgb.flags.writeable),
                       self.upload(layer.alpha, keep=not layer.alpha.flags.writeable), layer.x0, layer.y0)
                      for layer in layers]
        if on_device is not None:
            dev_layers.append((on_device.rgb, on_device.alpha, on_device.origin[0], on_device.origin[1]))
        host = self.compose_device(bg, dev_layers, width, height, with_alpha).cpu().numpy()
        n = height * width
        rgb = host[: 3 * n].reshape(height, width, 3)
        if not with_alpha:
            return Composited(rgb)
        return Composited(rgb, host[6 * n :].reshape(height, width), host[3 * n : 6 * n].reshape(height, width, 3))
