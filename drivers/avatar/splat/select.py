"""Choosing a splatting backend: gsplat's `rasterization()` on CUDA, the compiled tile rasteriser on the CPU.

Every avatar asks here, so "auto" means the same thing for all of them: gsplat when the avatar runs on a CUDA
device and gsplat imports, else "cpu". "cpu" is the compiled tile rasteriser (`tiles`, numba) for an avatar on
the CPU; where numba cannot be used it falls back, with a warning, to the torch reference rasteriser
(`reference`), which is also what "cpu" means on a CUDA device (it runs there as plain torch). "tiles" and
"reference" ask for one of the two by name (tests, benchmarks). Training asks with `differentiable=True`: the
tile rasteriser has no gradients, so then "auto" and "cpu" mean the reference on the CPU.
"""

from __future__ import annotations

import logging

import torch

from bridge.core.errors import UserError
from drivers.avatar.splat.gaussians import SplatRenderer
from drivers.avatar.splat.gsplat_backend import PREBUILT_ENV, GsplatRenderer, gsplat_available

log = logging.getLogger(__name__)

RENDERERS = ("auto", "cpu", "tiles", "reference", "gsplat")
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


def select_renderer(name: str, device: str, differentiable: bool = False) -> SplatRenderer:
    """The backend for avatar.renderer `name` on the (resolved or 'auto') `device`; with `differentiable`, one
    that gradients flow through (gsplat or the torch reference)."""
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
    if name == "tiles" and differentiable:
        raise RendererSetupError("renderer 'tiles' has no gradients; train with renderer 'auto' or 'reference'")
    if name == "tiles" or (name == "cpu" and device == "cpu" and not differentiable):
        try:
            from drivers.avatar.splat.tiles import TileSplatRenderer

            return TileSplatRenderer()
        except Exception as exc:  # numba missing (ImportError) or unable to compile here: same answer
            if name == "tiles":
                raise RendererSetupError(f"avatar.renderer = 'tiles' needs numba, which cannot be used here ({exc}); "
                                         "pip install numba, or use renderer 'auto'") from None
            log.warning("the compiled CPU renderer cannot be used (%s); using the slower torch CPU renderer", exc)
    from drivers.avatar.splat.reference import CpuSplatRenderer

    return CpuSplatRenderer()
