"""Head pose and expression refined by image alignment after the landmark fit: the face's own appearance, not
its landmarks.

A landmark model's points sit a few pixels off the surface points they are tied to, and the offset changes with
the viewing direction, which turns into rotation error. This stage keeps the landmark fit's shape, jaw, eyes and
eyelids and moves each frame's camera (R, t) and expression so that the video's pixels at the projected face
vertices agree with one appearance per vertex: an albedo shared by all frames times a per-frame first-order
lighting (constant plus a linear function of the camera-space normal), both solved in closed form between steps.
Every frame is compared with what all frames agree on, so the view-dependent offsets average out instead of
steering the pose. The expression moves too because the landmark fit's expression errors bend the face, and a
refinement of the pose alone turns the head to follow the bend. Images are blurred coarse to fine so that the
first steps see a wide basin. `refine_video` runs it over a long video a stretch of frames at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from bridge.core.rotations import axis_angle_to_matrix as axis_angle_to_matrix_np
from bridge.core.rotations import matrix_to_axis_angle
from bridge.core.rotations_torch import axis_angle_to_matrix
from drivers.avatar.flame.model import FlameModel
from drivers.avatar.flashavatar.create.tracking import (
    SurfaceFlame,
    TrackingError,
    TrackingResult,
    resolve_device,
    second_difference,
)


@dataclass
class PhotometricSettings:
    blur_px: tuple[float, ...] = (4.0, 2.0, 1.0)  # Gaussian blur of each level, coarse to fine
    steps: int = 60  # per level
    lr: float = 0.003
    smooth: float = 100.0  # second differences of the pose change (radians; decimetres)
    prior: float = 0.3  # how much the pose may leave the landmark fit (radians; decimetres)
    facing: float = 0.3  # a vertex is used where its normal faces the camera at least this much (cosine)
    relight_every: int = 5
    expression: bool = True  # refine the expression too: its errors otherwise turn into pose errors
    expr_lr: float = 0.02
    expr_prior: float = 0.01  # how much the expression may leave the landmark fit
    expr_smooth: float = 1.0  # second differences of the expression change


def face_vertices(flame: FlameModel, depth_m: float = 0.07) -> NDArray[np.int64]:
    """The template's front: vertices within `depth_m` of its most forward point, eyeballs left out."""
    v = flame.v_template.cpu().numpy()
    front = v[:, 2] > v[:, 2].max() - depth_m
    faces = flame.faces.cpu().numpy()
    in_faces = np.zeros(len(v), bool)
    in_faces[faces.reshape(-1)] = True
    eyeball = _eyeball_vertices(faces, len(v))
    return np.flatnonzero(front & in_faces & ~eyeball)


def _eyeball_vertices(faces: NDArray[np.integer], n: int) -> NDArray[np.bool_]:
    """FLAME's eyeballs are the two mesh components that share no vertex with the rest (the last two)."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    for tri in faces:
        ra, rb, rc = find(int(tri[0])), find(int(tri[1])), find(int(tri[2]))
        parent[rb] = ra
        parent[find(rc)] = ra
    roots = np.array([find(i) for i in range(n)])
    ids, counts = np.unique(roots, return_counts=True)
    main = ids[np.argmax(counts)]
    return roots != main


def _vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F,V,3) area-weighted vertex normals of (F,V,3) vertices."""
    tri = verts[:, faces]  # (F,T,3,3)
    n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    out = torch.zeros_like(verts)
    for k in range(3):
        out.index_add_(1, faces[:, k], n)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """(F,1,H,W) blurred separably."""
    r = max(1, int(round(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    img = F.conv2d(F.pad(img, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(img, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def refine_pose(result: TrackingResult, frames: Sequence[NDArray[np.uint8]], flame: FlameModel,
                device: str = "auto", settings: PhotometricSettings | None = None,
                progress: Callable[[int, int], None] | None = None) -> TrackingResult:
    """`result` with each frame's camera R, t (and expression) refined against the video `frames` (F of (S,S,3)
    RGB, the crop the landmarks were found in); shape, jaw, eyes and eyelids are kept. All frames are held at
    once: `refine_video` takes a long video in overlapping stretches. `progress(step, steps)` is told as it goes."""
    cfg = settings or PhotometricSettings()
    size = result.image_size
    if len(frames) != result.frames or any(f.shape != (size, size, 3) for f in frames):
        raise TrackingError(f"photometric refinement needs the {result.frames} tracked frames at {size}x{size} RGB")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    n = result.frames
    vid = face_vertices(flame)
    faces = flame.faces.to(dev)
    cam0 = torch.as_tensor(result.vertices(flame), device=dev)  # (F,V,3) camera coordinates
    R0 = torch.as_tensor(result.R, device=dev)
    t0_ = torch.as_tensor(result.t, device=dev)
    normals0 = _vertex_normals(cam0, faces)[:, vid]  # camera frame, landmark-fit pose
    pts0 = cam0[:, vid]
    centre = pts0.mean(1, keepdim=True)  # rotations about the face's centre
    gray = torch.as_tensor(np.stack(frames), device=dev).float().mean(-1)[:, None] / 255.0  # (F,1,S,S)
    fx = float(result.K[0, 0])
    c = float(result.K[0, 2])
    ok = torch.as_tensor(result.valid, device=dev, dtype=torch.float32)

    d_rot = torch.zeros(n, 3, device=dev, requires_grad=True)
    d_trans = torch.zeros(n, 3, device=dev, requires_grad=True)
    d_expr = torch.zeros(n, result.expression.shape[1], device=dev, requires_grad=True)
    model = SurfaceFlame.at_vertices(flame, vid, dev)

    def tt(a: NDArray[np.floating]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)

    expr0 = tt(result.expression)
    expression_change = model.expression_change(tt(result.shape), expr0,
                                                model.joint_rotations(tt(result.jaw), tt(result.eyes)))

    def posed() -> tuple[torch.Tensor, torch.Tensor]:
        Rd = axis_angle_to_matrix(d_rot)
        pts = pts0
        if cfg.expression:
            pts = pts + expression_change(d_expr) @ R0.transpose(1, 2)
        pts = (pts - centre) @ Rd.transpose(1, 2) + centre + d_trans[:, None] * 0.1
        return pts, normals0 @ Rd.transpose(1, 2)

    def sample(img: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        uv = pts[..., :2] / pts[..., 2:3].clamp_min(1e-3) * fx + c
        grid = (uv / (size - 1) * 2 - 1)[:, :, None]  # (F,P,1,2), pixel centres on integers
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0, :, 0]

    def relight(obs: torch.Tensor, basis: torch.Tensor, vis: torch.Tensor, albedo: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame lighting (F,4) given the albedo, then the albedo (P,) given the lighting."""
        a = basis * albedo[None, :, None] * vis[..., None]  # (F,P,4)
        ata = a.transpose(1, 2) @ a + 1e-4 * torch.eye(4, device=dev)
        light = torch.linalg.solve(ata, (a * (obs * vis)[..., None]).sum(1))  # (F,4)
        shade = (basis * light[:, None]).sum(-1)  # (F,P)
        albedo = (obs * shade * vis).sum(0) / (shade.pow(2) * vis).sum(0).clamp_min(1e-6)
        return shade, albedo

    steps, total = 0, cfg.steps * len(cfg.blur_px)
    for sigma in cfg.blur_px:
        img = _gaussian_blur(gray, sigma)
        with torch.no_grad():
            pts, nrm = posed()
            view = -pts / pts.norm(dim=-1, keepdim=True)
            vis = ((nrm * view).sum(-1) > cfg.facing).float() * ok[:, None]
            obs = sample(img, pts)
            basis = torch.cat([torch.ones_like(nrm[..., :1]), nrm], dim=-1)  # (F,P,4)
            albedo = (obs * vis).sum(0) / vis.sum(0).clamp_min(1)
            for _ in range(3):
                shade, albedo = relight(obs, basis, vis, albedo)
            seen = vis.sum(0) >= 2
            vis = vis * seen
        opt = torch.optim.Adam([{"params": [d_rot, d_trans], "lr": cfg.lr},
                                {"params": [d_expr], "lr": cfg.expr_lr if cfg.expression else 0.0}])
        for i in range(cfg.steps):
            pts, nrm = posed()
            obs = sample(img, pts)
            if i % cfg.relight_every == 0:
                with torch.no_grad():
                    basis = torch.cat([torch.ones_like(nrm[..., :1]), nrm], dim=-1)
                    for _ in range(2):
                        shade, albedo = relight(obs, basis, vis, albedo)
                    target = albedo[None] * shade
            r = (obs - target) * vis
            data = F.huber_loss(r * 20, torch.zeros_like(r), delta=1.0, reduction="sum") / vis.sum().clamp_min(1)
            loss = data + cfg.smooth * (second_difference(d_rot) + second_difference(d_trans)) \
                + cfg.prior * (d_rot.pow(2).sum(-1) + d_trans.pow(2).sum(-1)).mean()
            if cfg.expression:
                loss = loss + cfg.expr_smooth * second_difference(d_expr) + cfg.expr_prior * d_expr.pow(2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if progress is not None and (steps % 10 == 0 or steps == total):
                progress(steps, total)

    with torch.no_grad():
        Rd = axis_angle_to_matrix(d_rot)
        cen = centre[:, 0]
        R = Rd @ R0
        t = ((t0_ - cen)[:, None] @ Rd.transpose(1, 2))[:, 0] + cen + d_trans * 0.1
    seconds = dict(result.seconds)
    seconds["photometric_s"] = time.perf_counter() - t0
    expression = (expr0 + d_expr).detach().cpu().numpy().astype(np.float32)
    return replace(result, R=R.cpu().numpy().astype(np.float32), t=t.cpu().numpy().astype(np.float32),
                   expression=expression, seconds=seconds)


def refine_video(result: TrackingResult, read_frames: Callable[[int, int], Sequence[NDArray[np.uint8]]],
                 flame: FlameModel, device: str = "auto", settings: PhotometricSettings | None = None,
                 chunk: int = 128, overlap: int = 16, progress: Callable[[int, int], None] | None = None
                 ) -> TrackingResult:
    """`refine_pose` over a video of any length, `chunk` frames at a time so memory stays bounded:
    `read_frames(a, b)` gives frames a..b-1. Stretches overlap by `overlap` frames and are cross-faded there,
    so no seam shows where one stretch's appearance model hands over to the next. `progress(frames, total)`."""
    n = result.frames
    if chunk <= overlap:
        raise TrackingError(f"photometric refinement: a stretch of {chunk} frames must be longer than its overlap "
                            f"({overlap})")
    parts = max(1, -(-(n - overlap) // (chunk - overlap)))
    length = -(-(n + (parts - 1) * overlap) // parts)  # even stretches: no short last one with little to go on
    R, t, expr = result.R.astype(np.float64), result.t.astype(np.float64), result.expression.astype(np.float64)
    seconds = 0.0
    done = 0  # frames refined so far (the previous stretch's end)
    for k in range(parts):
        a = k * (length - overlap)
        b = n if k == parts - 1 else min(n, a + length)
        part = result.take(slice(a, b))
        if part.valid.any():
            refined = refine_pose(part, read_frames(a, b), flame, device, settings,
                                  _stretch_progress(progress, done, b, n))
            seconds += refined.seconds.get("photometric_s", 0.0)
            w = np.ones(b - a)  # the new stretch's weight: rising across the overlap with the one before
            seam = done - a
            w[:seam] = np.arange(1, seam + 1) / (seam + 1)
            delta = matrix_to_axis_angle(np.einsum("fji,fjk->fik", R[a:b], refined.R.astype(np.float64)))
            R[a:b] = R[a:b] @ axis_angle_to_matrix_np(delta * w[:, None])
            t[a:b] += w[:, None] * (refined.t - t[a:b])
            expr[a:b] += w[:, None] * (refined.expression - expr[a:b])
        done = b
        if progress is not None:
            progress(done, n)
    out = dict(result.seconds)
    out["photometric_s"] = seconds
    return replace(result, R=R.astype(np.float32), t=t.astype(np.float32), expression=expr.astype(np.float32),
                   seconds=out)


def _stretch_progress(progress: Callable[[int, int], None] | None, start: int, end: int, total: int
                      ) -> Callable[[int, int], None] | None:
    """A stretch's step counter told as frames of the whole video (start..end of total)."""
    if progress is None:
        return None
    report = progress
    return lambda step, steps: report(start + (end - start) * step // steps, total)
