"""gsplat's `rasterization()` as a splatting backend, with the same inputs and outputs as the CPU renderer.

`AVATAR_BRIDGE_GSPLAT_PREBUILT` may name a folder holding a gsplat build (e.g. an unpacked wheel made for the
machine's CUDA), put first on `sys.path` before the import, for machines that cannot install or JIT-compile
gsplat themselves.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch

from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings

PREBUILT_ENV = "AVATAR_BRIDGE_GSPLAT_PREBUILT"


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
