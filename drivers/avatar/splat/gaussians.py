"""What a splatting renderer consumes: a set of 3D Gaussians and a pinhole camera, in gsplat's conventions.

Every renderer (`reference` on the CPU, `gsplat_backend` on CUDA; `select` picks one) takes exactly these
values, so an avatar builds them once and the backend is a choice, not a code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Gaussians:
    """N Gaussians in world space.

    means (N,3); quats (N,4) as (w,x,y,z), need not be normalised; scales (N,3) linear (after exp);
    opacities (N,) in [0,1] (after sigmoid); colors (N,K,3) SH coefficients with K = (sh_degree+1)^2,
    DC first, or (N,3) plain RGB when sh_degree is None.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor
    sh_degree: int | None = None

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def to(self, device: torch.device | str) -> Gaussians:
        return Gaussians(
            self.means.to(device),
            self.quats.to(device),
            self.scales.to(device),
            self.opacities.to(device),
            self.colors.to(device),
            self.sh_degree,
        )


@dataclass
class Camera:
    """OpenCV pinhole camera: `viewmat` (4,4) world→camera (x right, y down, z forward), `K` (3,3) in
    pixels with pixel centres at +0.5 (gsplat's convention)."""

    viewmat: torch.Tensor
    K: torch.Tensor
    width: int
    height: int
    near: float = 0.01
    far: float = 1e10


@dataclass
class RasterSettings:
    """Knobs shared by both backends; defaults are gsplat's `rasterization()` defaults."""

    eps2d: float = 0.3
    max_alpha: float = 0.999
    min_alpha: float = 1.0 / 255.0
    min_transmittance: float = 1e-4
    radius_clip: float = 0.0


class SplatRenderer(Protocol):
    """Rasterises Gaussians: returns (rgb (H,W,3) float in [0,1] on the Gaussians' device, alpha (H,W))."""

    name: str

    def render(
        self,
        gaussians: Gaussians,
        camera: Camera,
        background: torch.Tensor | None = None,
        settings: RasterSettings | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...
