"""Offline FlashAvatar rendering: many frames in one pass (`avatar-bridge avatar render`, multi-view) and the
posed Gaussians of a frame in FLAME's frame (PLY export).

Both reuse the live avatar's model, camera and renderer; batches are deformed in one pass and, with gsplat,
rasterised in one call, so they trade the live path's per-frame latency for throughput.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bridge.core.face_params import FaceParams
from bridge.core.interfaces import RenderedImage
from bridge.core.rotations_torch import matrix_to_quat, quat_product
from drivers.avatar.flame.model import head_motion
from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
from drivers.avatar.flashavatar.frame_batcher import render_frames
from drivers.avatar.splat.gaussians import Gaussians
from drivers.avatar.splat.images import to_uint8

MAX_BATCH = 16  # frames per batched deformation/rasterisation pass (bounds device memory)


def render_batch(avatar: FlashAvatarAvatar, params: Sequence[FaceParams],
                 views: np.ndarray | torch.Tensor | None = None, max_batch: int = MAX_BATCH) -> list[RenderedImage]:
    """Images of many frames: `views` (B,4,4) world→camera matrices, one per frame, replace the base view
    (head motion still applies). Chunks of `max_batch` frames are deformed in one pass and rasterised in one
    gsplat call (one call per frame with other renderers)."""
    if views is not None:
        views = torch.as_tensor(np.asarray(views, np.float32) if isinstance(views, np.ndarray) else views)
        if views.shape != (len(params), 4, 4):
            raise ValueError(f"views has shape {tuple(views.shape)}; expected ({len(params)}, 4, 4)")
    out: list[RenderedImage] = []
    for s in range(0, len(params), max_batch):
        chunk = params[s:s + max_batch]
        v = None if views is None else views[s:s + len(chunk)]
        out.extend(_render_chunk(avatar, chunk, v))
    return out


def _render_chunk(avatar: FlashAvatarAvatar, params: Sequence[FaceParams], views: torch.Tensor | None
                  ) -> list[RenderedImage]:
    packed = torch.cat([avatar.pack(p) for p in params])
    base = avatar.base_camera.viewmat.expand(len(params), 4, 4) if views is None else views
    rgb, alpha = render_frames(avatar, packed, base)
    rgbs = to_uint8(rgb)
    alphas = to_uint8(alpha) if avatar.transparent else None
    return [RenderedImage(rgbs[i], None if alphas is None else alphas[i]) for i in range(len(params))]


def world_gaussians(avatar: FlashAvatarAvatar, params: FaceParams, apply_head_motion: bool = True) -> Gaussians:
    """Gaussians of a frame in FLAME's frame, optionally moved rigidly by the frame's head motion (means and
    orientations; view-dependent SH colour stays in the head's frame). A standalone copy on the CPU."""
    model = avatar.model
    six = params.to_6d()
    frame = model.frame_from_arrays(params.expression, six["jaw"], six["eyes"], params.eyelids)
    with torch.no_grad():
        means, quats, scales = (x[0].float().cpu() for x in model.gaussians_batch(frame))
    if apply_head_motion:
        joints = model.joints0.detach().cpu().numpy().astype(np.float64)
        m = torch.as_tensor(head_motion(params.head, params.neck, params.translation, joints), dtype=torch.float32)
        means = means @ m[:3, :3].T + m[:3, 3]
        turn = matrix_to_quat(m[:3, :3].double()).float()
        quats = torch.nn.functional.normalize(quat_product(turn.expand_as(quats), quats), dim=-1)
    return Gaussians(means, quats, scales, model.opacities.cpu(), model.sh.cpu(), model.sh_degree)
