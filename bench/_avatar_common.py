"""Shared helpers of the FlashAvatar benchmark scripts: build the golden avatar and pick a splat renderer.

Imports nothing beyond torch/numpy and our own modules (no pydantic, no PyAV), so the scripts run on a bare
CUDA machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.face_params import FaceParams  # noqa: E402
from drivers.avatar.gaussians import Camera, Gaussians, RasterSettings  # noqa: E402

DEFAULT_GOLDEN = Path(os.environ.get("AVATAR_BRIDGE_GOLDEN_FA", REPO.parent / "shared" / "golden" / "flashavatar"))
GREEN = (0.0, 1.0, 0.0)


class GsplatDirect:
    """gsplat `rasterization()` with upstream FlashAvatar's settings; used only when the project's renderer
    registry (`drivers.avatar.renderers`) is not present in this checkout."""

    name = "gsplat"

    def __init__(self) -> None:
        from gsplat import rasterization

        self._raster = rasterization

    def render(self, g: Gaussians, cam: Camera, background: torch.Tensor | None = None,
               settings: RasterSettings | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = settings or RasterSettings()
        dev = g.means.device
        bg = None if background is None else background.to(dev, torch.float32).reshape(1, 3)
        rgb, alpha, _ = self._raster(
            g.means, g.quats, g.scales, g.opacities, g.colors, cam.viewmat.to(dev)[None], cam.K.to(dev)[None],
            cam.width, cam.height, near_plane=cam.near, far_plane=cam.far, eps2d=s.eps2d,
            radius_clip=s.radius_clip, sh_degree=g.sh_degree, backgrounds=bg, rasterize_mode="classic",
            packed=False,
        )
        return rgb[0], alpha[0, ..., 0]

    def render_batch(self, g: Gaussians, viewmats: torch.Tensor, cam: Camera, background: torch.Tensor | None = None,
                     settings: RasterSettings | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """B frames (means/quats/scales (B,N,·), viewmats (B,4,4)) in one `rasterization()` call."""
        from drivers.avatar.flashavatar_avatar import gsplat_render_batch

        return gsplat_render_batch(g, viewmats, cam, background, settings or RasterSettings())


def renderer(name: str, device: str) -> Any:
    """The project's renderer for `name` ('cpu' | 'gsplat'), falling back to the direct gsplat call."""
    try:
        from drivers.avatar.renderers import select_renderer
    except ImportError:
        select_renderer = None
    if select_renderer is not None:
        return select_renderer(name, device)
    if name == "gsplat":
        return GsplatDirect()
    from drivers.avatar.render_cpu import CpuSplatRenderer

    return CpuSplatRenderer()


def build_avatar(golden: Path, width: int, height: int, device: str, splat: Any, **extra: Any) -> Any:
    from drivers.avatar.flashavatar_avatar import FlashAvatarAvatar

    z = np.load(golden / "golden_seed0.npz")
    flame = golden / "flame_synthetic.npz"  # a converted copy (smaller to ship), else the original pickle
    return FlashAvatarAvatar(
        checkpoint=golden / "chkpnt_seed0.pth", flame_model=flame if flame.is_file() else golden / "flame_synthetic.pkl",
        flame_masks=golden / "FLAME_masks_synthetic.pkl", flame_mesh=golden / "FlameMesh.obj", eyelids_dir=golden,
        shape=z["shape"], width=width, height=height, device=device, background=GREEN, splat_renderer=splat,
        **extra,
    )


def golden_params(golden: Path, extra_head_turns: bool = True) -> list[FaceParams]:
    """The golden frames as FaceParams, plus the same faces with the head turned (camera motion)."""
    z = np.load(golden / "golden_seed0.npz")
    out = [FaceParams.from_6d(z["expr"][i], z["jaw_pose"][i], z["eyes_pose"][i], z["eyelids"][i])
           for i in range(len(z["expr"]))]
    if extra_head_turns:
        turns = [(0.0, 0.35, 0.0), (0.2, -0.25, 0.05), (-0.1, 0.0, 0.2)]
        out += [out[(k + 1) % len(out)].copy(head=np.array(t, np.float32)) for k, t in enumerate(turns)]
    return out
