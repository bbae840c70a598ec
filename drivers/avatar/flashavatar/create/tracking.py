"""FLAME fitted to a video's face-mesh landmarks, every frame at once on one torch device.

The unknowns are metrical-tracker's: one shape for the video; per frame expression, jaw, eyes, eyelids and the
rigid head motion as an OpenCV camera (R, t) with one shared focal length (principal point at the centre). Only
the FLAME vertices under the landmarks are evaluated (a few hundred of 5023), so a whole video is one batch:
each optimiser step sees every frame, and a temporal term (second differences of every per-frame parameter)
keeps a still face still and carries the parameters through frames where no face was found.

Stages: a closed-form rigid start per frame (scaled orthographic Procrustes of the template's landmark points),
then the camera alone, then everything, then everything again with each landmark trusted by how well it was
followed. Camera rotations are optimised about the landmarks' centre so rotation and translation do not fight
each other. `photometric.refine_video` then refines the camera and the expression against the video's
pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from numpy.typing import NDArray

from bridge.core.errors import UserError
from bridge.core.rotations import axis_angle_to_matrix as axis_angle_to_matrix_np
from bridge.core.rotations import matrix_to_axis_angle
from bridge.core.rotations_torch import axis_angle_to_matrix
from drivers.avatar.flame.files import N_JOINTS
from drivers.avatar.flame.model import N_EXPR, N_SHAPE, FlameModel, batch_rigid_transform
from drivers.avatar.flashavatar.create.correspondence import (
    FACE_OVAL,
    IRIS_CENTRES,
    LOWER_LIDS,
    UPPER_LIDS,
    VIEW_RANGE_DEG,
    Correspondence,
)

FLIP = np.diag([1.0, -1.0, -1.0])  # FLAME (y up, face towards +z) seen by an OpenCV camera (y down, +z ahead)


# The temporal term's scale of each per-frame parameter (radians for rotations, decimetres for translation).
SMOOTH_SCALE = {"rotation": 1.0, "translation": 10.0, "expression": 0.3, "jaw": 1.0, "eyes": 1.0, "eyelids": 0.1}


class TrackingError(UserError, ValueError):
    """The landmarks cannot be tracked (no frame with a face, wrong array shapes)."""


@dataclass
class FitSettings:
    """Weights and step counts; the defaults were set on the ground-truth video of `synthetic_video`."""

    shape_components: int = 50
    rigid_steps: int = 150
    full_steps: int = 500
    lr: float = 0.02
    contour_weight: float = 0.3
    iris_weight: float = 3.0
    lid_weight: float = 2.0
    robust_steps: int = 200  # a last stage with each landmark reweighted by how well the fit could follow it
    robust_px: float = 1.5  # a landmark whose median residual is this far counts half in that stage
    shape_reg: float = 1e-3
    expr_reg: float = 2e-4
    jaw_reg: float = 1e-3
    jaw_side_reg: float = 1.0  # jaw yaw/roll and any opening the wrong way
    eye_reg: float = 1e-4
    eye_pair_reg: float = 0.05  # the two eyes look the same way
    lid_reg: float = 1e-4
    smooth: float = 5.0  # second differences of per-frame parameters (scaled by SMOOTH_SCALE), vs the data term
    focal_init: float = 2.0  # focal length in image sizes (about 28° field of view)
    focal_reg: float = 1e-3
    sliding: bool = True  # use the table's view-dependent landmark slide when it has one
    trust_mm: float = 2.0  # landmarks that wandered this far between views (see Correspondence) count half


@dataclass
class TrackingResult:
    shape: NDArray[np.float32]  # (300,)
    expression: NDArray[np.float32]  # (F,100)
    jaw: NDArray[np.float32]  # (F,3) axis-angle
    eyes: NDArray[np.float32]  # (F,6) axis-angle, left then right
    eyelids: NDArray[np.float32]  # (F,2)
    R: NDArray[np.float32]  # (F,3,3) OpenCV world→camera
    t: NDArray[np.float32]  # (F,3)
    K: NDArray[np.float32]  # (3,3)
    image_size: int
    landmark_error_px: NDArray[np.float32]  # (F,) median landmark distance; NaN where no face was found
    valid: NDArray[np.bool_]  # (F,) frames with detected landmarks (the rest are interpolated)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.expression.shape[0])

    def vertices(self, flame: FlameModel, frames: slice | None = None) -> NDArray[np.float32]:
        """Posed FLAME vertices (F,V,3) in camera coordinates (OpenCV: x right, y down, z ahead)."""
        sl = frames or slice(None)
        dev, dt = flame.device, flame.dtype

        def tt(a: NDArray[np.float32]) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a[sl]), device=dev, dtype=dt)

        with torch.no_grad():
            n = int(self.expression[sl].shape[0])
            verts = flame(shape=torch.as_tensor(self.shape, device=dev, dtype=dt)[None].expand(n, -1),
                          expression=tt(self.expression), jaw=tt(self.jaw), eyes=tt(self.eyes),
                          eyelids=tt(self.eyelids))
            cam = verts @ tt(self.R).transpose(1, 2) + tt(self.t)[:, None]
        return cam.cpu().numpy().astype(np.float32)

    def take(self, frames: slice) -> TrackingResult:
        """The same tracking for a stretch of frames (shape and camera intrinsics shared)."""
        return replace(self, expression=self.expression[frames], jaw=self.jaw[frames], eyes=self.eyes[frames],
                       eyelids=self.eyelids[frames], R=self.R[frames], t=self.t[frames],
                       landmark_error_px=self.landmark_error_px[frames], valid=self.valid[frames],
                       seconds=dict(self.seconds))

    def project(self, verts: NDArray[np.floating]) -> NDArray[np.float32]:
        """Camera-space points (..., 3) → pixels (..., 2) through K."""
        v = np.asarray(verts, np.float64)
        uv = v[..., :2] / v[..., 2:3] * np.array([self.K[0, 0], self.K[1, 1]]) + self.K[:2, 2]
        return uv.astype(np.float32)


class SurfaceFlame:
    """FLAME evaluated only at some points of its surface, each a triangle and barycentric weights (the landmarks'
    points, or the face's vertices): the same arithmetic as `FlameModel.forward` on a few thousand vertices."""

    def __init__(self, flame: FlameModel, face_idx: NDArray[np.integer], bary: NDArray[np.floating],
                 device: torch.device) -> None:
        faces = flame.faces.cpu().numpy()
        tri = faces[np.asarray(face_idx)]  # (L,3)
        self.vids, inverse = np.unique(tri.reshape(-1), return_inverse=True)
        self.tri_local = torch.as_tensor(inverse.reshape(-1, 3), device=device)
        self.bary = torch.as_tensor(np.asarray(bary), dtype=torch.float32, device=device)
        vid = torch.as_tensor(self.vids, device=flame.device)

        def sub(x: torch.Tensor) -> torch.Tensor:
            return x.index_select(0, vid).to(device=device, dtype=torch.float32)

        self.template = sub(flame.v_template).reshape(-1)  # (n*3,)
        dirs = sub(flame.shapedirs)  # (n,3,400) → rows of (n*3,) per component, contiguous for matmuls
        self.shape_dirs = dirs[:, :, :N_SHAPE].reshape(-1, N_SHAPE).T.contiguous()
        self.expr_dirs = dirs[:, :, N_SHAPE:N_SHAPE + N_EXPR].reshape(-1, N_EXPR).T.contiguous()
        v3 = (vid[:, None] * 3 + torch.arange(3, device=flame.device)).reshape(-1)
        self.posedirs = flame.posedirs.index_select(1, v3).to(device=device, dtype=torch.float32)  # (36, n*3)
        self.weights = sub(flame.weights)
        jd = flame._j_dirs.to(device=device, dtype=torch.float32)  # (5,3,400)
        self.j_template = flame._j_template.to(device=device, dtype=torch.float32).reshape(-1)
        self.j_shape = jd[:, :, :N_SHAPE].reshape(-1, N_SHAPE).T.contiguous()  # (300, 15)
        self.j_expr = jd[:, :, N_SHAPE:N_SHAPE + N_EXPR].reshape(-1, N_EXPR).T.contiguous()
        self.parents = flame.parents
        self.parent_idx = flame._parent_idx.to(device)
        self.lids = None
        if flame.l_eyelid is not None and flame.r_eyelid is not None:
            self.lids = torch.stack([sub(flame.l_eyelid).reshape(-1), sub(flame.r_eyelid).reshape(-1)])  # (2,n*3)
        self.eye3 = torch.eye(3, device=device)

    @classmethod
    def at_vertices(cls, flame: FlameModel, vertices: NDArray[np.integer], device: torch.device) -> SurfaceFlame:
        """The model evaluated at the given vertices (each as a corner of one of its triangles)."""
        faces = flame.faces.cpu().numpy()
        owner = np.full(int(flame.v_template.shape[0]), -1)
        corner = np.zeros_like(owner)
        for k in range(3):
            owner[faces[:, k]] = np.arange(len(faces))
            corner[faces[:, k]] = k
        v = np.asarray(vertices)
        if (owner[v] < 0).any():
            raise TrackingError("a vertex outside every triangle cannot be evaluated on the surface")
        return cls(flame, owner[v], np.eye(3)[corner[v]], device)

    def joint_rotations(self, jaw: torch.Tensor, eyes: torch.Tensor) -> torch.Tensor:
        """(B,5,3,3) FLAME's joint rotations with the head and neck still (the camera carries the head's motion)."""
        eye = self.eye3.expand(jaw.shape[0], 3, 3)
        return torch.stack([eye, eye, axis_angle_to_matrix(jaw), axis_angle_to_matrix(eyes[:, :3]),
                            axis_angle_to_matrix(eyes[:, 3:])], dim=1)

    def _joints(self, shape: torch.Tensor, expr: torch.Tensor) -> torch.Tensor:
        ns = shape.shape[0]
        return ((self.j_template + shape @ self.j_shape[:ns]) + expr @ self.j_expr).reshape(-1, N_JOINTS, 3)

    def _skinning(self, rots: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each vertex's blended rotation (B,n,3,3) and translation (B,n,3). Blended separately and applied
        elementwise: a few hundred thousand 3x3 products run far faster so than as batched matmuls of tiny
        matrices."""
        b = rots.shape[0]
        world = batch_rigid_transform(rots, joints, self.parents, self.parent_idx)
        rot = (self.weights @ world[..., :3, :3].reshape(b, N_JOINTS, 9)).reshape(b, -1, 3, 3)
        return rot, self.weights @ world[..., :3, 3]

    def _at_points(self, verts: torch.Tensor) -> torch.Tensor:
        """(B,n,3) values at the vertices → (B,L,3) at the points."""
        return (verts[:, self.tri_local] * self.bary[None, :, :, None]).sum(2)

    def __call__(self, shape: torch.Tensor, expr: torch.Tensor, rots: torch.Tensor,
                 eyelids: torch.Tensor | None) -> torch.Tensor:
        """shape (S,) leading components, expr (B,100), rots (B,5,3,3) → the points (B,L,3), FLAME frame."""
        b = expr.shape[0]
        ns = shape.shape[0]
        v_shaped = (self.template + shape @ self.shape_dirs[:ns]) + expr @ self.expr_dirs  # (B, n*3)
        pose_feature = (rots[:, 1:] - self.eye3).reshape(b, -1)
        v_posed = (v_shaped + pose_feature @ self.posedirs).reshape(b, -1, 3)
        rot, move = self._skinning(rots, self._joints(shape, expr))
        verts = (rot * v_posed[:, :, None, :]).sum(-1) + move
        if eyelids is not None and self.lids is not None:
            verts = verts + (eyelids @ self.lids).reshape(b, -1, 3)
        return self._at_points(verts)

    def expression_change(self, shape: torch.Tensor, expr: torch.Tensor, rots: torch.Tensor
                          ) -> Callable[[torch.Tensor], torch.Tensor]:
        """With shape and joint rotations held, how the points (B,L,3) move when the expression `expr` (B,100)
        changes by d (B,100). Exact and cheap: the skinning rotations do not depend on the expression and the
        joints move linearly with it, so the points do too."""
        b = expr.shape[0]
        joints = self._joints(shape, expr).detach()
        rot, move0 = (x.detach() for x in self._skinning(rots, joints))

        def change(d: torch.Tensor) -> torch.Tensor:
            shift = (rot * (d @ self.expr_dirs).reshape(b, -1, 1, 3)).sum(-1)
            _, move = self._skinning(rots, joints + (d @ self.j_expr).reshape(b, N_JOINTS, 3))
            return self._at_points(shift + move - move0)

        return change


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrackingError(f"--device {device}: this machine has no CUDA device; use --device cpu or auto")
    return torch.device(device)


def _interpolate_invalid(x: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Per-frame values (F, ...) with the invalid frames linearly interpolated from the valid ones."""
    idx = np.flatnonzero(valid)
    flat = x.reshape(len(x), -1).copy()
    for c in range(flat.shape[1]):
        flat[:, c] = np.interp(np.arange(len(x)), idx, flat[idx, c])
    return flat.reshape(x.shape)


def rigid_start(points: NDArray[np.float64], model: NDArray[np.float64], weights: NDArray[np.float64],
                focal: float, centre: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-frame camera rotation (F,3,3) and translation (F,3) of `model` points (L,3) seen at `points`
    (F,L,2), from a scaled orthographic Procrustes fit (weighted), depth from the scale and the focal length."""
    w = weights / weights.sum()
    m0 = model - (w[:, None] * model).sum(0)
    p_mean = np.einsum("l,flc->fc", w, points)
    p0 = points - p_mean[:, None]
    # Least-squares 2x3 map A with p0 ≈ A m0, then the nearest scaled pair of orthonormal rows.
    mw = m0 * w[:, None]
    a = np.einsum("flc,lk->fck", p0, mw) @ np.linalg.inv(m0.T @ mw)  # (F,2,3)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    rows = u @ vt  # (F,2,3) orthonormal rows
    scale = s.mean(1)
    R = np.concatenate([rows, np.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
    z = focal / scale
    centre_model = (w[:, None] * model).sum(0)
    cam_centre = np.stack([(p_mean[:, 0] - centre) * z / focal, (p_mean[:, 1] - centre) * z / focal, z], axis=1)
    t = cam_centre - R @ centre_model
    return R, t


def second_difference(x: torch.Tensor) -> torch.Tensor:
    """Mean over frames of the squared second difference of per-frame values (F, K): the temporal terms."""
    if x.shape[0] < 3:
        return x.new_zeros(())
    return (x[2:] - 2 * x[1:-1] + x[:-2]).pow(2).sum(-1).mean()


def fit_video(
    points: NDArray[np.float32],
    valid: NDArray[np.bool_],
    image_size: int,
    flame: FlameModel,
    eyelids: tuple[NDArray[np.floating], NDArray[np.floating]] | None,
    correspondence: Correspondence,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    settings: FitSettings | None = None,
) -> TrackingResult:
    """FLAME + camera per frame from face-mesh landmarks `points` (F,478,2) in crop pixels (x right, y down).

    `eyelids` are FLAME's eyelid blendshapes (left, right), used when `flame` has none of its own."""
    cfg = settings or FitSettings()
    pts = np.asarray(points, np.float64)
    ok = np.asarray(valid, bool).copy()
    if pts.ndim != 3 or pts.shape[2] != 2 or pts.shape[1] <= int(correspondence.landmark_indices.max()):
        raise TrackingError(f"landmarks must be (frames, 478, 2) pixel coordinates, got {pts.shape}")
    if ok.shape != (len(pts),):
        raise TrackingError(f"valid must hold one flag per frame ({len(pts)}), got {ok.shape}")
    ok &= np.isfinite(pts[:, correspondence.landmark_indices]).all(axis=(1, 2))
    if not ok.any():
        raise TrackingError("no frame has a face to track; check that the video shows a face")
    if eyelids is not None and flame.l_eyelid is None:
        flame = _with_eyelids(flame, eyelids)
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    lm = correspondence.landmark_indices
    n_frames, size = len(pts), float(image_size)
    target_np = _interpolate_invalid(pts[:, lm], ok)
    weights_np = correspondence.weights(cfg.trust_mm)
    weights_np[np.isin(lm, FACE_OVAL)] *= cfg.contour_weight
    weights_np[np.isin(lm, IRIS_CENTRES)] *= cfg.iris_weight
    weights_np[np.isin(lm, UPPER_LIDS + LOWER_LIDS)] *= cfg.lid_weight

    correspondence.check_faces(len(flame.faces))
    model = SurfaceFlame(flame, correspondence.face_idx, correspondence.bary, dev)
    neutral = model(torch.zeros(1, device=dev), torch.zeros(1, N_EXPR, device=dev),
                    torch.eye(3, device=dev).expand(1, N_JOINTS, 3, 3), None)[0].cpu().numpy().astype(np.float64)
    centre_model = neutral.mean(0)
    focal0 = cfg.focal_init * size
    rigid_w = np.where(np.isin(lm, FACE_OVAL + IRIS_CENTRES), 0.0, 1.0)  # contour slides; irises rotate
    R0, t0_ = rigid_start(target_np, neutral, rigid_w, focal0, size / 2)
    R0 = _interpolate_rotations(R0, ok)
    t0_ = _interpolate_invalid(t0_, ok)
    # Parameterise t about the landmarks' centre: X_cam = R (X - c) + tc.
    tc0 = t0_ + np.einsum("fij,j->fi", R0, centre_model)
    timings["init_s"] = time.perf_counter() - t0

    def param(x: NDArray[np.floating] | torch.Tensor) -> torch.Tensor:
        return torch.nn.Parameter(torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev).clone())

    rot = param(matrix_to_axis_angle(R0 @ FLIP))  # the camera rotation relative to a frontal view
    trans = param(tc0)
    log_focal = param(np.array([math.log(focal0)]))
    shape = param(np.zeros(cfg.shape_components))
    expr = param(np.zeros((n_frames, N_EXPR)))
    jaw = param(np.zeros((n_frames, 3)))
    eyes = param(np.zeros((n_frames, 6)))
    lids = param(np.zeros((n_frames, 2)))
    target = torch.as_tensor(target_np, dtype=torch.float32, device=dev)
    frame_w = torch.as_tensor(ok, dtype=torch.float32, device=dev)
    lm_w = torch.as_tensor(weights_np / weights_np.mean(), dtype=torch.float32, device=dev)
    centre_t = torch.as_tensor(centre_model, dtype=torch.float32, device=dev)
    slide = None if correspondence.view_offsets is None or not cfg.sliding else \
        torch.as_tensor(correspondence.view_offsets, dtype=torch.float32, device=dev)
    view_lim = [math.radians(a) for a in VIEW_RANGE_DEG]
    flip = torch.as_tensor(FLIP, dtype=torch.float32, device=dev)
    frames_ok = max(float(ok.sum()), 1.0)

    def landmarks_3d() -> torch.Tensor:
        return model(shape, expr, model.joint_rotations(jaw, eyes), lids)

    def project(x: torch.Tensor) -> torch.Tensor:
        R = axis_angle_to_matrix(rot) @ flip
        if slide is not None:  # where the landmark model puts each point from this frame's viewing direction
            with torch.no_grad():
                d = R.transpose(1, 2) @ -trans[:, :, None]  # camera centres relative to the head centre
                yaw = torch.atan2(-d[:, 0, 0], d[:, 2, 0]).clamp(-view_lim[0], view_lim[0])
                pitch = torch.atan2(d[:, 1, 0], torch.hypot(d[:, 0, 0], d[:, 2, 0])).clamp(-view_lim[1], view_lim[1])
                feats = torch.stack([yaw, pitch, yaw**2, pitch**2], dim=1)  # as correspondence.view_features
            x = x + torch.einsum("fk,lkc->flc", feats, slide)
        cam = (x - centre_t) @ R.transpose(1, 2) + trans[:, None]
        f = log_focal.exp()
        return cam[..., :2] / cam[..., 2:3].clamp_min(1e-3) * f + size / 2

    def data_term(uv: torch.Tensor) -> torch.Tensor:
        err = ((uv - target) / size).pow(2).sum(-1)  # (F,L), in image sizes²
        return (err * lm_w).mean(1).mul(frame_w).sum() / frames_ok

    def smooth_term(groups: list[torch.Tensor]) -> torch.Tensor:
        return sum((second_difference(g) for g in groups), torch.zeros((), device=dev))

    sc = SMOOTH_SCALE
    total = cfg.rigid_steps + cfg.full_steps + cfg.robust_steps
    step = 0
    # Stage 1: the camera alone (rotation, translation, focal).
    opt = torch.optim.Adam([rot, trans, log_focal], lr=cfg.lr)
    with torch.no_grad():
        neutral_points = landmarks_3d()
    for i in range(cfg.rigid_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(cfg.rigid_steps, 1))))
        opt.zero_grad(set_to_none=True)
        uv = project(neutral_points)
        loss = data_term(uv) * 1e3 + cfg.smooth * smooth_term([rot * sc["rotation"], trans * sc["translation"]]) \
            + cfg.focal_reg * (log_focal - math.log(focal0)).pow(2).sum()
        loss.backward()
        opt.step()
        step += 1
        if progress is not None and step % 25 == 0:
            progress(step, total)
    timings["rigid_s"] = time.perf_counter() - t0 - timings["init_s"]

    def full_stage(steps: int, lr: float) -> None:
        """Everything at once. Expression and shape move in their own units; the camera moves finer."""
        nonlocal step
        opt = torch.optim.Adam([
            {"params": [rot], "lr": lr * 0.25}, {"params": [trans], "lr": lr * 0.1},
            {"params": [log_focal], "lr": lr * 0.25}, {"params": [shape, expr], "lr": lr * 2.5},
            {"params": [jaw, eyes], "lr": lr}, {"params": [lids], "lr": lr * 2.5}])
        base = [g["lr"] for g in opt.param_groups]
        for i in range(steps):
            k = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1)))
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * k
            opt.zero_grad(set_to_none=True)
            uv = project(landmarks_3d())
            side = jaw[:, 1:].pow(2).sum(-1) + torch.relu(-jaw[:, 0]).pow(2)
            reg = (cfg.shape_reg * shape.pow(2).sum() + cfg.expr_reg * expr.pow(2).sum(-1).mean()
                   + cfg.jaw_reg * jaw.pow(2).sum(-1).mean() + cfg.jaw_side_reg * side.mean()
                   + cfg.eye_reg * eyes.pow(2).sum(-1).mean() + cfg.eye_pair_reg * (eyes[:, :3] - eyes[:, 3:]).pow(2)
                   .sum(-1).mean() + cfg.lid_reg * lids.pow(2).sum(-1).mean()
                   + cfg.focal_reg * (log_focal - math.log(focal0)).pow(2).sum())
            loss = data_term(uv) * 1e3 + reg + cfg.smooth * smooth_term(
                [rot * sc["rotation"], trans * sc["translation"], expr * sc["expression"], jaw * sc["jaw"],
                 eyes * sc["eyes"], lids * sc["eyelids"]])
            loss.backward()
            opt.step()
            step += 1
            if progress is not None and (step % 25 == 0 or step == total):
                progress(step, total)

    full_stage(cfg.full_steps, cfg.lr)
    if cfg.robust_steps > 0:
        with torch.no_grad():
            resid = (project(landmarks_3d()) - target).norm(dim=-1)[frame_w > 0].median(dim=0).values
            lm_w *= 1.0 / (1.0 + (resid / cfg.robust_px).pow(2))
            lm_w /= lm_w.mean()
        full_stage(cfg.robust_steps, cfg.lr * 0.3)  # from where the fit is: smaller steps
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    timings["full_s"] = time.perf_counter() - t0 - timings["init_s"] - timings["rigid_s"]

    with torch.no_grad():
        uv = project(landmarks_3d())
        err = (uv - target).norm(dim=-1).median(dim=1).values.cpu().numpy()
        R = (axis_angle_to_matrix(rot) @ flip).cpu().numpy().astype(np.float64)
        tc = trans.cpu().numpy().astype(np.float64)
        f = float(log_focal.exp())
    t_out = tc - np.einsum("fij,j->fi", R, centre_model)
    full_shape = np.zeros(N_SHAPE, np.float32)
    full_shape[:cfg.shape_components] = shape.detach().cpu().numpy()
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], np.float32)

    def out(p: torch.Tensor) -> NDArray[np.float32]:
        return p.detach().cpu().numpy().astype(np.float32)

    return TrackingResult(shape=full_shape, expression=out(expr), jaw=out(jaw), eyes=out(eyes), eyelids=out(lids),
                          R=R.astype(np.float32), t=t_out.astype(np.float32), K=K, image_size=int(image_size),
                          landmark_error_px=np.where(ok, err, np.nan).astype(np.float32), valid=ok,
                          seconds=timings)


def _interpolate_rotations(R: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Rotations of the invalid frames from the valid ones (axis-angle interpolated, then re-projected)."""
    if valid.all():
        return R
    aa = _interpolate_invalid(matrix_to_axis_angle(R @ FLIP), valid)
    return axis_angle_to_matrix_np(aa) @ FLIP


def _with_eyelids(flame: FlameModel, eyelids: tuple[NDArray[np.floating], NDArray[np.floating]]) -> FlameModel:
    """The same FLAME with the eyelid blendshapes attached (shares its tensors)."""
    import copy

    out = copy.copy(flame)
    for name, arr in zip(("l_eyelid", "r_eyelid"), eyelids):
        a = np.asarray(arr, np.float32)
        if a.shape != tuple(flame.v_template.shape):
            raise TrackingError(f"eyelid blendshape {name} is {a.shape}; FLAME's needs {tuple(flame.v_template.shape)}")
        setattr(out, name, torch.as_tensor(a, device=flame.device, dtype=flame.dtype))
    return out
