"""Real spherical-harmonics colour, degree 0-3, with the constants and sign conventions of 3DGS and gsplat.

Splat colours are stored as SH coefficients per channel; evaluating them along the viewing direction gives
view-dependent colour. Both renderers must agree on this exactly, so it lives in one place.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Coefficients per channel for an SH degree: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """The real SH basis functions at unit directions `dirs` (..., 3): returns (..., (degree+1)^2)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            C2[0] * xy,
            C2[1] * yz,
            C2[2] * (2.0 * zz - xx - yy),
            C2[3] * xz,
            C2[4] * (xx - yy),
        ]
        if degree >= 3:
            out += [
                C3[0] * y * (3.0 * xx - yy),
                C3[1] * xy * z,
                C3[2] * y * (4.0 * zz - xx - yy),
                C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                C3[4] * x * (4.0 * zz - xx - yy),
                C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3.0 * yy),
            ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour from SH `coeffs` (..., K, 3), K >= (degree+1)^2, along `dirs` (..., 3) (normalised here).

    Returns the raw SH sum (..., 3); the renderers add 0.5 and clamp at 0 as gsplat's `rasterization()` does.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"SH degree {degree} needs {k} coefficients per channel, got {coeffs.shape[-2]}")
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, unit)  # (..., k)
    return (basis[..., :, None] * coeffs[..., :k, :]).sum(dim=-2)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """The DC coefficient that renders as `rgb` (the inverse of C0 * c + 0.5)."""
    return (rgb - 0.5) / C0
