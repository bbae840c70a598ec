"""Choosing a splatting backend: gsplat's `rasterization()` on CUDA, the torch CPU renderer everywhere else.

Every avatar asks here, so "auto" means the same thing for all of them: gsplat when the avatar runs on a CUDA
device and gsplat imports, else the CPU renderer.
"""

from __future__ import annotations

import torch

from bridge.core.errors import UserError
from drivers.avatar.splat.gaussians import SplatRenderer
from drivers.avatar.splat.gsplat_backend import PREBUILT_ENV, GsplatRenderer, gsplat_available

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
    from drivers.avatar.splat.reference import CpuSplatRenderer

    return CpuSplatRenderer()
