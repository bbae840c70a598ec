"""Upstream's initialisation of the Gaussians, from their positions on the first training frame.

One Gaussian per UV texel (the texel table fixes how many and where), grey (all SH coefficients zero, which
renders as 0.5), opacity 0.1, no rotation, and an isotropic size from the mean squared distance to the three
nearest neighbours - what upstream's `distCUDA2` gives - so neighbouring splats just overlap.
"""

from __future__ import annotations

import math

import torch

INIT_OPACITY = 0.1
MIN_SQ_DIST = 1e-7  # upstream's clamp: coincident points still get a finite log-scale


def mean_sq_knn_distance(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """(N,) mean squared distance of each point to its k nearest other points (exact, in row chunks)."""
    n = points.shape[0]
    if n <= k:
        raise ValueError(f"need more than {k} points for a {k}-nearest-neighbour distance, got {n}")
    # Centred first, so squared distances of millimetres keep their precision next to metre-sized coordinates.
    p = points.detach().float()
    p = p - p.mean(dim=0)
    out = torch.empty(n, device=p.device)
    for s in range(0, n, chunk):
        block = p[s:s + chunk]
        d2 = torch.cdist(block, p).square()
        rows = torch.arange(block.shape[0], device=p.device)
        d2[rows, rows + s] = float("inf")  # not its own neighbour
        out[s:s + chunk] = d2.topk(k, dim=1, largest=False).values.mean(dim=1)
    return out


def inverse_sigmoid(p: float) -> float:
    return math.log(p / (1.0 - p))


def initial_gaussians(points: torch.Tensor, sh_coeffs: int = 16) -> dict[str, torch.Tensor]:
    """Upstream's `create_from_verts`: the initial values of every per-Gaussian parameter."""
    n, dev = points.shape[0], points.device
    log_scale = torch.log(torch.sqrt(mean_sq_knn_distance(points).clamp_min(MIN_SQ_DIST)))
    rotation = torch.zeros(n, 4, device=dev)
    rotation[:, 0] = 1.0
    return {
        "features_dc": torch.zeros(n, 1, 3, device=dev),
        "features_rest": torch.zeros(n, sh_coeffs - 1, 3, device=dev),
        "scaling_base": log_scale[:, None].repeat(1, 3).to(dev),
        "rotation_base": rotation,
        "opacity": torch.full((n, 1), inverse_sigmoid(INIT_OPACITY), device=dev),
    }
