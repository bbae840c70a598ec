"""FlashAvatar's inference model: Gaussians bound to UV texels of FLAME, moved by a deformation MLP.

The weights come from upstream's `chkpnt*.pth` (`checkpoint.load_checkpoint`). Per frame:
`d = tanh(MLP([PE(canonical), expr, jaw6, eyes12, eyelids]))`; position = barycentric sample of the posed
FLAME mesh + d[0:3]; rotation = base ⊗ (exp(d3), d4, d5, d6); scale = exp(base_log · exp(d[7:10])).

The MLP's first layer is split: its canonical-position half is evaluated once per subject, so per frame only
the condition half (a single 120-vector) is added before the remaining layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridge.core.rotations_torch import quat_product
from drivers.avatar.flame.files import FlameFileError, load_masks
from drivers.avatar.flame.model import BoundFlame, FlameModel, to_matrix
from drivers.avatar.flame.obj import load_obj
from drivers.avatar.flame.uv_sampling import UVRaster, head_mask, rasterize_uv
from drivers.avatar.flashavatar.checkpoint import (
    COND_DIM,
    N_FREQS,
    PE_DIM,
    CheckpointError,
    FlashAvatarCheckpoint,
    load_checkpoint,
)
from drivers.avatar.splat.gaussians import Gaussians

log = logging.getLogger(__name__)

UV_SIZE = 128


def positional_encoding(x: torch.Tensor, n_freqs: int = N_FREQS) -> torch.Tensor:
    """[x, sin(2^0 x), cos(2^0 x), ..., sin(2^(n-1) x), cos(2^(n-1) x)] along the last axis (no pi)."""
    parts = [x]
    for k in range(n_freqs):
        f = float(2.0**k)
        parts.append(torch.sin(x * f))
        parts.append(torch.cos(x * f))
    return torch.cat(parts, dim=-1)


class DeformMLP(nn.Module):
    """Linear+ReLU x hidden_layers, then a linear head; parameter names match upstream's state dict."""

    def __init__(self, input_dim: int = PE_DIM + COND_DIM, output_dim: int = 10, hidden_dim: int = 256,
                 hidden_layers: int = 6) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(
            [nn.Linear(input_dim, hidden_dim)] + [nn.Linear(hidden_dim, hidden_dim) for _ in range(hidden_layers - 1)]
        )
        self.output_linear = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.fcs:
            h = F.relu(layer(h))
        return self.output_linear(h)


def apply_deformation(d: torch.Tensor, mesh_points: torch.Tensor, rotation_base: torch.Tensor,
                      scaling_base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MLP's tanh outputs `d` (B,N,10) applied to the Gaussians: means = mesh points + d[0:3], quats =
    base ⊗ (exp(d3), d4, d5, d6) normalised, scales = exp(base_log · exp(d[7:10])). Rendering and training
    share this, so a trained checkpoint means exactly what it meant while it was trained."""
    means = mesh_points + d[..., 0:3]
    q_delta = torch.cat([torch.exp(d[..., 3:4]), d[..., 4:7]], dim=-1)
    quats = F.normalize(quat_product(rotation_base[None], q_delta), dim=-1)
    scales = torch.exp(scaling_base[None] * torch.exp(d[..., 7:10]))
    return means, quats, scales


@dataclass
class SubjectFiles:
    """The FLAME-side files every avatar of this kind is built on: FLAME, the UV raster of the template mesh and
    the mask boundary; together they fix the Gaussians (texels) a checkpoint must have."""

    flame: FlameModel
    raster: UVRaster
    mesh_faces: np.ndarray
    boundary: np.ndarray

    @classmethod
    def load(cls, flame_model: Path | str, flame_masks: Path | str, flame_mesh: Path | str,
             eyelids_dir: Path | str | None, device: torch.device | str = "cpu") -> SubjectFiles:
        flame = FlameModel.from_files(flame_model, eyelids_dir, device=device)
        mesh = load_obj(flame_mesh)
        if int(mesh.faces.max()) >= flame.num_vertices:
            raise FlameFileError(f"{flame_mesh} indexes vertex {int(mesh.faces.max())}; FLAME has {flame.num_vertices}")
        raster = rasterize_uv(mesh.uvs, mesh.uv_faces, UV_SIZE)
        return cls(flame, raster, mesh.faces, load_masks(flame_masks)["boundary"])

    @property
    def num_gaussians(self) -> int:
        return int(head_mask(self.raster, self.mesh_faces, self.boundary).sum())


@dataclass
class FlashFrame:
    """One frame of FlashAvatar conditions (batched): expr (B,100), jaw (B,6), eyes (B,12), eyelids (B,2)."""

    expr: torch.Tensor
    jaw6: torch.Tensor
    eyes12: torch.Tensor
    eyelids: torch.Tensor


class FlashAvatarModel:
    """A subject's avatar: checkpoint + FLAME + texel table, producing posed Gaussians on one device."""

    def __init__(
        self,
        ckpt: FlashAvatarCheckpoint,
        flame: FlameModel,
        raster: UVRaster,
        mesh_faces: np.ndarray,
        boundary: np.ndarray,
        shape: torch.Tensor,
        device: torch.device | str = "cpu",
        mlp_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        self.ckpt = ckpt
        keep = head_mask(raster, mesh_faces, boundary)
        self.texels_covered = int(raster.uv_mask.sum())
        n = int(keep.sum())
        if n != ckpt.num_gaussians:
            raise CheckpointError(
                f"the checkpoint has {ckpt.num_gaussians} Gaussians but this FLAME mesh/mask set gives {n} "
                f"({self.texels_covered} UV texels, {n} off the mask boundary): use the FlameMesh.obj and "
                "FLAME_masks.pkl the avatar was trained with"
            )
        self.head_mask = keep
        self.raster = raster
        dev = self.device
        faces = torch.as_tensor(np.asarray(mesh_faces, np.int64)[raster.texel_faces[keep]], device=dev)
        self.tex_faces = faces  # (N,3) vertex ids
        self.tex_bary = torch.as_tensor(raster.texel_bary[keep], device=dev)  # (N,3)
        self.flame = flame
        shape = torch.as_tensor(shape, dtype=torch.float32, device=dev).reshape(1, -1)
        self.shape = shape
        self.bound: BoundFlame = flame.bind_shape(shape)
        with torch.no_grad():
            neutral = flame(shape=shape)[0]
            self.canonical = self.sample(neutral[None])[0]  # (N,3)
            self.joints0 = self.bound.j0.clone()  # (5,3) joints of the shaped, neutral-expression mesh
        self.mlp = DeformMLP(ckpt.input_dim, ckpt.output_dim, ckpt.hidden_dim, ckpt.hidden_layers)
        self.mlp.load_state_dict(ckpt.mlp_state)
        self.mlp.to(dev).eval()
        self.mlp_dtype = mlp_dtype
        self._prepare_mlp()
        self.rotation_base = ckpt.rotation_base.to(dev)
        self.scaling_base = ckpt.scaling_base.to(dev)
        self.opacities = torch.sigmoid(ckpt.opacity.to(dev))[:, 0].contiguous()
        self.sh = torch.cat([ckpt.features_dc, ckpt.features_rest], dim=1).to(dev).contiguous()
        self.sh_degree = ckpt.active_sh_degree
        eye6 = torch.tensor([1.0, 0, 0, 0, 1.0, 0], device=dev)
        self._identity = to_matrix(eye6[None], 1)[0, 0]

    # -- construction from files -------------------------------------------------------------------------
    @classmethod
    def from_files(
        cls,
        checkpoint: Path | str,
        flame_model: Path | str,
        flame_masks: Path | str,
        flame_mesh: Path | str,
        eyelids_dir: Path | str | None,
        shape: np.ndarray | torch.Tensor | None,
        device: torch.device | str = "cpu",
        mlp_dtype: torch.dtype = torch.float32,
    ) -> FlashAvatarModel:
        files = SubjectFiles.load(flame_model, flame_masks, flame_mesh, eyelids_dir, device)
        return cls.from_subject(checkpoint, files, shape, device, mlp_dtype)

    @classmethod
    def from_subject(
        cls,
        checkpoint: Path | str,
        files: SubjectFiles,
        shape: np.ndarray | torch.Tensor | None,
        device: torch.device | str = "cpu",
        mlp_dtype: torch.dtype = torch.float32,
    ) -> FlashAvatarModel:
        """A checkpoint on FLAME files already loaded (shared by every avatar built on them)."""
        ckpt = load_checkpoint(checkpoint)
        if shape is None:
            shape = np.zeros(300, np.float32)
        return cls(ckpt, files.flame, files.raster, files.mesh_faces, files.boundary,
                   torch.as_tensor(np.asarray(shape, np.float32)), device=device, mlp_dtype=mlp_dtype)

    # -- per-subject precomputation ----------------------------------------------------------------------
    def _prepare_mlp(self) -> None:
        """Evaluate the canonical half of layer 0 once; keep the rest of the weights in `mlp_dtype`."""
        layers: list[nn.Linear] = [m for m in self.mlp.fcs if isinstance(m, nn.Linear)]
        w0 = layers[0].weight.detach()
        b0 = layers[0].bias.detach()
        with torch.no_grad():
            pe = positional_encoding(self.canonical)
            self._h0 = (pe @ w0[:, :PE_DIM].T + b0).contiguous()  # (N,H) fp32
        self._w0_cond = w0[:, PE_DIM:].contiguous()  # (H,120)
        dt = self.mlp_dtype
        self._hidden = [(lin.weight.detach().to(dt).contiguous(), lin.bias.detach().to(dt).contiguous())
                        for lin in layers[1:]]
        self._out = (self.mlp.output_linear.weight.detach().float(), self.mlp.output_linear.bias.detach().float())

    def set_mlp_dtype(self, dtype: torch.dtype) -> None:
        self.mlp_dtype = dtype
        self._prepare_mlp()

    # -- per frame ---------------------------------------------------------------------------------------
    def sample(self, verts: torch.Tensor) -> torch.Tensor:
        """Barycentric sample of (B,V,3) vertices at the Gaussians' texels → (B,N,3)."""
        tri = verts[:, self.tex_faces]  # (B,N,3,3)
        return (self.tex_bary[None, :, :, None] * tri).sum(dim=2)

    def condition(self, frame: FlashFrame) -> torch.Tensor:
        return torch.cat([frame.expr, frame.jaw6, frame.eyes12, frame.eyelids], dim=1)

    def deform(self, cond: torch.Tensor) -> torch.Tensor:
        """tanh(MLP) for every Gaussian: (B,120) → (B,N,10) float32."""
        h = torch.relu(self._h0[None] + (cond @ self._w0_cond.T)[:, None, :])  # (B,N,H)
        h = h.to(self.mlp_dtype)
        for w, b in self._hidden:
            h = torch.relu(torch.addmm(b, h.reshape(-1, h.shape[-1]), w.T)).reshape(h.shape)
        w, b = self._out
        return torch.tanh(h.float() @ w.T + b)

    def pose_vertices(self, frame: FlashFrame) -> torch.Tensor:
        b = frame.expr.shape[0]
        eye = self._identity.expand(b, 1, 3, 3)
        rots = torch.cat([eye, eye, to_matrix(frame.jaw6, 1), to_matrix(frame.eyes12, 2)], dim=1)
        return self.bound(frame.expr, rots, frame.eyelids)

    def gaussians_batch(self, frame: FlashFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means (B,N,3), quats (B,N,4) normalised, scales (B,N,3)) for a batch of frames."""
        d = self.deform(self.condition(frame))
        verts = self.pose_vertices(frame)
        return apply_deformation(d, self.sample(verts), self.rotation_base, self.scaling_base)

    def gaussians(self, frame: FlashFrame) -> Gaussians:
        means, quats, scales = self.gaussians_batch(frame)
        return Gaussians(means[0], quats[0], scales[0], self.opacities, self.sh, self.sh_degree)

    def frame_from_arrays(self, expr: Any, jaw6: Any, eyes12: Any, eyelids: Any) -> FlashFrame:
        def t(x: Any, n: int) -> torch.Tensor:
            v = torch.as_tensor(np.asarray(x, np.float32), device=self.device).reshape(-1, n)
            return v

        return FlashFrame(t(expr, 100), t(jaw6, 6), t(eyes12, 12), t(eyelids, 2))
