"""Choosing a splatting backend: gsplat's `rasterization()` on CUDA, the torch CPU renderer everywhere else.

Every avatar asks here, so "auto" means the same thing for all of them: gsplat when the avatar runs on a CUDA
device and gsplat imports, else the CPU renderer. `AVATAR_BRIDGE_GSPLAT_PREBUILT` may name a folder holding a
gsplat build (e.g. an unpacked wheel made for the machine's CUDA), put first on `sys.path` before the import,
for machines that cannot install or JIT-compile gsplat themselves.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch

from bridge.errors import UserError
from drivers.avatar.gaussians import Camera, Gaussians, RasterSettings, SplatRenderer

PREBUILT_ENV = "AVATAR_BRIDGE_GSPLAT_PREBUILT"
RENDERERS = ("auto", "cpu", "gsplat")
DEVICES = ("auto", "cpu", "cuda")


class RendererSetupError(UserError, ValueError):
    """The requested renderer or device cannot be used here; the message says what to change."""


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when a CUDA device is present, else 'cpu'; an explicit 'cuda' must be available."""
    if device not in DEVICES:
        raise RendererSetupError(f"avatar.device {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RendererSetupError("avatar.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def import_gsplat() -> Any:
    """The gsplat module (from `$AVATAR_BRIDGE_GSPLAT_PREBUILT` first when set); raises ImportError."""
    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt:
        if not os.path.isdir(prebuilt):
            raise ImportError(f"${PREBUILT_ENV}={prebuilt} is not a folder")
        if prebuilt not in sys.path:
            sys.path.insert(0, prebuilt)
    return importlib.import_module("gsplat")


def gsplat_available() -> bool:
    try:
        import_gsplat()
    except Exception:  # any failure to import (missing, ABI mismatch, no toolkit) means "not usable"
        return False
    return True


class GsplatRenderer:
    """gsplat `rasterization()` (classic mode, unpacked): the same inputs and outputs as the CPU renderer."""

    name = "gsplat"

    def __init__(self) -> None:
        self._raster = import_gsplat().rasterization

    def render(
        self,
        gaussians: Gaussians,
        camera: Camera,
        background: torch.Tensor | None = None,
        settings: RasterSettings | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = gaussians
        one = Gaussians(g.means[None], g.quats[None], g.scales[None], g.opacities, g.colors, g.sh_degree)
        rgb, alpha = self.render_batch(one, camera.viewmat[None], camera, background, settings)
        return rgb[0], alpha[0]

    def render_batch(
        self,
        gaussians: Gaussians,
        viewmats: torch.Tensor,
        camera: Camera,
        background: torch.Tensor | None = None,
        settings: RasterSettings | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B frames of one Gaussian set in one call: means/quats/scales (B,N,·), shared opacities (N,) and
        colours (N,K,3), a camera per frame `viewmats` (B,4,4) sharing `camera`'s intrinsics and size.
        Returns rgb (B,H,W,3), alpha (B,H,W)."""
        s = settings or RasterSettings()
        g = gaussians
        b, n = g.means.shape[0], g.means.shape[1]
        dev = g.means.device
        bg = None if background is None else background.to(dev, torch.float32).reshape(1, 1, 3).expand(b, 1, 3)
        rgb, alpha, _ = self._raster(
            g.means, g.quats, g.scales, g.opacities.reshape(-1).expand(b, n), g.colors.expand(b, *g.colors.shape),
            viewmats.to(dev, torch.float32)[:, None], camera.K.to(dev, torch.float32).expand(b, 1, 3, 3),
            camera.width, camera.height, near_plane=camera.near, far_plane=camera.far, eps2d=s.eps2d,
            radius_clip=s.radius_clip, sh_degree=g.sh_degree, backgrounds=bg, rasterize_mode="classic",
            packed=False,
        )
        return rgb[:, 0], alpha[:, 0, ..., 0]


def select_renderer(name: str, device: str) -> SplatRenderer:
    """The backend for avatar.renderer `name` on the (resolved or 'auto') `device`."""
    if name not in RENDERERS:
        raise RendererSetupError(f"avatar.renderer {name!r} is not one of {', '.join(RENDERERS)}")
    device = resolve_device(device)
    if name == "auto":
        name = "gsplat" if device == "cuda" and gsplat_available() else "cpu"
    if name == "gsplat":
        if device != "cuda":
            raise RendererSetupError("avatar.renderer = 'gsplat' needs avatar.device = 'cuda' (or 'auto' on a "
                                     "machine with CUDA); use renderer 'cpu' or 'auto' here")
        try:
            return GsplatRenderer()
        except Exception as exc:
            raise RendererSetupError(f"avatar.renderer = 'gsplat' but gsplat cannot be imported ({exc}); "
                                     f"pip install gsplat, set ${PREBUILT_ENV}, or use renderer 'auto'") from None
    from drivers.avatar.render_cpu import CpuSplatRenderer

    return CpuSplatRenderer()
