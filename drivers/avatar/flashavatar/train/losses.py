"""Upstream's training loss and the held-out metrics.

Loss: Huber(δ = 0.1) over the whole image plus 40 × Huber over the mouth-masked images; after 15k iterations
also 0.05 × LPIPS(VGG) of the head-masked images mapped to [-1, 1]. Metrics: PSNR and SSIM (11 × 11 Gaussian
window, σ = 1.5, the 3DGS definition) of clamped renders against the ground truth over the whole image, and
PSNR over the head mask alone (the background is easy, so the whole-image figure flatters).
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

HUBER_DELTA = 0.1
MOUTH_WEIGHT = 40.0
LPIPS_WEIGHT = 0.05
LPIPS_FROM = 15_000
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16, LPIPS(VGG)'s backbone
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"


def photometric_loss(render: torch.Tensor, gt: torch.Tensor, mouth: torch.Tensor, delta: float = HUBER_DELTA,
                     mouth_weight: float = MOUTH_WEIGHT) -> torch.Tensor:
    """Huber on the image + `mouth_weight` × Huber on the mouth region (images (..., 3), mouth (..., 1))."""
    whole = F.huber_loss(render, gt, delta=delta)
    return whole + mouth_weight * F.huber_loss(render * mouth, gt * mouth, delta=delta)


def psnr(render: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] (the render is clamped first)."""
    mse = (render.clamp(0.0, 1.0) - gt).square().mean()
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def masked_psnr(render: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR over the pixels where `mask` (..., 1) is set: the head alone, without the easy background."""
    w = (mask > 0.5).to(render.dtype)
    mse = ((render.clamp(0.0, 1.0) - gt).square() * w).sum() / (w.sum() * render.shape[-1]).clamp_min(1.0)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(render: torch.Tensor, gt: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (H, W, 3) images in [0, 1] (the render is clamped), zero padding as 3DGS computes it."""
    a = render.clamp(0.0, 1.0).permute(2, 0, 1)[None]
    b = gt.permute(2, 0, 1)[None]
    g = _gaussian_window(window, sigma, a.device)
    kx = g.reshape(1, 1, 1, -1).repeat(3, 1, 1, 1)
    ky = g.reshape(1, 1, -1, 1).repeat(3, 1, 1, 1)
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian, same result as the 2D window
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0)), kx, groups=3)
        return F.conv2d(F.pad(x, (0, 0, pad, pad)), ky, groups=3)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return s.mean()


def vgg_weights_path() -> Path:
    """Where torchvision looks for (and downloads) the VGG16 weights LPIPS needs."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


class Perceptual:
    """LPIPS(VGG) from the `lpips` package on head-masked images in [-1, 1]."""

    def __init__(self, module: Any) -> None:
        self.module = module

    @classmethod
    def load(cls, device: torch.device, download_timeout: float = 30.0) -> tuple[Perceptual | None, str]:
        """The loss, or None and the one line that says why not and what to do."""
        try:
            import lpips
        except ImportError:
            return None, ("LPIPS is not installed (pip install lpips): training without the perceptual loss "
                          "upstream adds after 15k iterations")
        weights = vgg_weights_path()
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(download_timeout)  # a machine without internet must not hang here
        try:
            module = lpips.LPIPS(net="vgg", verbose=False)
        except Exception as exc:  # no network, a broken download, an incompatible torchvision
            return None, (f"LPIPS(VGG) is unavailable ({type(exc).__name__}: {str(exc)[:80]}); to use it, download "
                          f"{VGG16_URL} to {weights}; training without the perceptual loss")
        finally:
            socket.setdefaulttimeout(previous)
        module = module.to(device).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return cls(module), f"LPIPS(VGG) loaded ({weights})"

    def __call__(self, render: torch.Tensor, gt: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """Images (H, W, 3), head mask (H, W, 1)."""
        a = (render * head).permute(2, 0, 1)[None] * 2.0 - 1.0
        b = (gt * head).permute(2, 0, 1)[None] * 2.0 - 1.0
        return self.module(a, b).mean()
