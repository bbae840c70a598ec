"""FlashAvatar's inference model: Gaussians bound to UV texels of FLAME, moved by a deformation MLP.

Checkpoint compatible with upstream's `chkpnt*.pth` (a tuple `((mlp_state, mlp_adam), gaussian_tuple,
iteration)`), loaded with `torch.load(weights_only=True)` so a file can never run code. Per frame:
`d = tanh(MLP([PE(canonical), expr, jaw6, eyes12, eyelids]))`; position = barycentric sample of the posed
FLAME mesh + d[0:3]; rotation = base ⊗ (exp(d3), d4, d5, d6); scale = exp(base_log · exp(d[7:10])).

The MLP's first layer is split: its canonical-position half is evaluated once per subject, so per frame only
the condition half (a single 120-vector) is added before the remaining layers.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridge.errors import UserError
from drivers.avatar.flame import BoundFlame, FlameModel, to_matrix
from drivers.avatar.flame_io import FlameFileError, load_masks
from drivers.avatar.gaussians import Gaussians
from drivers.avatar.obj import load_obj
from drivers.avatar.uv_sampling import UVRaster, head_mask, rasterize_uv

log = logging.getLogger(__name__)

N_FREQS = 8
PE_DIM = 3 * (1 + 2 * N_FREQS)  # 51
COND_DIM = 120  # expr 100, jaw 6, eyes 12, eyelids 2
UV_SIZE = 128
GAUSSIAN_TUPLE_LEN = 12


class CheckpointError(UserError, ValueError):
    """The checkpoint is missing, damaged, unsafe or not a FlashAvatar checkpoint; the text says what to do."""


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


def quat_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a ⊗ b of (..., 4) quaternions stored (w, x, y, z)."""
    w1, v1 = a[..., :1], a[..., 1:]
    w2, v2 = b[..., :1], b[..., 1:]
    w = w1 * w2 - (v1 * v2).sum(-1, keepdim=True)
    v = w1 * v2 + w2 * v1 + torch.cross(v1, v2, dim=-1)
    return torch.cat([w, v], dim=-1)


@dataclass
class FlashAvatarCheckpoint:
    """The parts of an upstream checkpoint inference needs (optimizer state is dropped)."""

    mlp_state: dict[str, torch.Tensor]
    active_sh_degree: int
    features_dc: torch.Tensor  # (N,1,3)
    features_rest: torch.Tensor  # (N,K-1,3)
    scaling_base: torch.Tensor  # (N,3) log scale
    rotation_base: torch.Tensor  # (N,4) wxyz
    opacity: torch.Tensor  # (N,1) logit
    iteration: int
    hidden_dim: int
    hidden_layers: int
    input_dim: int
    output_dim: int

    @property
    def num_gaussians(self) -> int:
        return int(self.features_dc.shape[0])

    @property
    def sh_degree(self) -> int:
        return round((self.features_rest.shape[1] + 1) ** 0.5) - 1

    @property
    def num_mlp_params(self) -> int:
        return int(sum(v.numel() for v in self.mlp_state.values()))


def unpickling_reason(exc: BaseException) -> str:
    """The informative line of torch's weights-only refusal (the global it met), not its generic advice."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), None)
    return (hit or (lines[0] if lines else type(exc).__name__))[:200]


def _torch_load(path: Path) -> Any:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch checkpoint (not a zip archive; truncated or another format); "
                              "copy the chkpnt*.pth again from the training machine")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = unpickling_reason(exc)
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain containers ({first}); "
            "FlashAvatar checkpoints never do, so this file is not one (or has been tampered with)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise CheckpointError(
            f"{path} is truncated or not a torch checkpoint ({type(exc).__name__}: {str(exc)[:160]}); "
            "copy the chkpnt*.pth again from the training machine"
        ) from None


def _shape(t: Any, name: str, want: tuple[int | None, ...], path: Path) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"{path}: {name} should be a tensor, found {type(t).__name__}; not a FlashAvatar checkpoint")
    if t.dim() != len(want) or any(w is not None and s != w for s, w in zip(t.shape, want)):
        shown = tuple("N" if w is None else w for w in want)
        raise CheckpointError(f"{path}: {name} has shape {tuple(t.shape)}, expected {shown}")
    if not torch.isfinite(t).all():
        raise CheckpointError(f"{path}: {name} contains NaN or infinite values; the training run diverged")
    return t.detach().float()


def load_checkpoint(path: Path | str) -> FlashAvatarCheckpoint:
    """Read an upstream `chkpnt*.pth` safely and validate every shape."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; set avatar.checkpoint to FlashAvatar's chkpnt*.pth")
    obj = _torch_load(path)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3):
        got = f"a {type(obj).__name__}" + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        raise CheckpointError(
            f"{path} holds {got}; a FlashAvatar checkpoint is a tuple (deform_model, gaussians, iteration) "
            "as written by its train.py"
        )
    deform, gauss, iteration = obj
    if not (isinstance(deform, (tuple, list)) and len(deform) == 2 and isinstance(deform[0], dict)):
        raise CheckpointError(f"{path}: the first element should be (mlp_state_dict, optimizer_state); it is not")
    if not (isinstance(gauss, (tuple, list)) and len(gauss) == GAUSSIAN_TUPLE_LEN):
        n = len(gauss) if isinstance(gauss, (tuple, list)) else type(gauss).__name__
        raise CheckpointError(f"{path}: the Gaussian tuple should have {GAUSSIAN_TUPLE_LEN} entries, found {n}")
    state = OrderedDict(deform[0])
    n_layers = 0
    while f"fcs.{n_layers}.weight" in state:
        n_layers += 1
    if n_layers == 0 or "output_linear.weight" not in state:
        raise CheckpointError(f"{path}: the MLP state has no fcs.0.weight / output_linear.weight; not FlashAvatar's")
    w0 = _shape(state["fcs.0.weight"], "fcs.0.weight", (None, None), path)
    hidden, in_dim = int(w0.shape[0]), int(w0.shape[1])
    if in_dim != PE_DIM + COND_DIM:
        raise CheckpointError(f"{path}: the MLP takes {in_dim} inputs; FlashAvatar's takes {PE_DIM + COND_DIM} "
                              f"(positional encoding {PE_DIM} + condition {COND_DIM})")
    out_w = _shape(state["output_linear.weight"], "output_linear.weight", (None, hidden), path)
    out_dim = int(out_w.shape[0])
    if out_dim != 10:
        raise CheckpointError(f"{path}: the MLP outputs {out_dim} values; FlashAvatar's outputs 10")
    clean: dict[str, torch.Tensor] = {}
    for i in range(n_layers):
        fan_in = in_dim if i == 0 else hidden
        clean[f"fcs.{i}.weight"] = _shape(state.get(f"fcs.{i}.weight"), f"fcs.{i}.weight", (hidden, fan_in), path)
        clean[f"fcs.{i}.bias"] = _shape(state.get(f"fcs.{i}.bias"), f"fcs.{i}.bias", (hidden,), path)
    clean["output_linear.weight"] = out_w
    clean["output_linear.bias"] = _shape(state.get("output_linear.bias"), "output_linear.bias", (out_dim,), path)
    extra = set(state) - set(clean)
    if extra:
        raise CheckpointError(f"{path}: unexpected MLP entries {sorted(extra)[:4]}; not FlashAvatar's network")
    sh_deg = gauss[0]
    if not isinstance(sh_deg, int) or not 0 <= sh_deg <= 3:
        raise CheckpointError(f"{path}: active_sh_degree is {sh_deg!r}; expected an int 0..3")
    dc = _shape(gauss[2], "_features_dc", (None, 1, 3), path)
    n = int(dc.shape[0])
    rest = _shape(gauss[3], "_features_rest", (n, None, 3), path)
    if int(rest.shape[1]) not in (0, 3, 8, 15):
        raise CheckpointError(f"{path}: _features_rest has {rest.shape[1]} SH coefficients; expected 15 (degree 3)")
    return FlashAvatarCheckpoint(
        mlp_state=clean,
        active_sh_degree=sh_deg,
        features_dc=dc,
        features_rest=rest,
        scaling_base=_shape(gauss[4], "_scaling_base", (n, 3), path),
        rotation_base=_shape(gauss[5], "_rotation_base", (n, 4), path),
        opacity=_shape(gauss[6], "_opacity", (n, 1), path),
        iteration=int(iteration) if isinstance(iteration, int) else -1,
        hidden_dim=hidden,
        hidden_layers=n_layers,
        input_dim=in_dim,
        output_dim=out_dim,
    )


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
        ckpt = load_checkpoint(checkpoint)
        flame = FlameModel.from_files(flame_model, eyelids_dir, device=device)
        mesh = load_obj(flame_mesh)
        if int(mesh.faces.max()) >= flame.num_vertices:
            raise FlameFileError(f"{flame_mesh} indexes vertex {int(mesh.faces.max())}; FLAME has {flame.num_vertices}")
        raster = rasterize_uv(mesh.uvs, mesh.uv_faces, UV_SIZE)
        boundary = load_masks(flame_masks)["boundary"]
        if shape is None:
            shape = np.zeros(300, np.float32)
        return cls(ckpt, flame, raster, mesh.faces, boundary, torch.as_tensor(np.asarray(shape, np.float32)),
                   device=device, mlp_dtype=mlp_dtype)

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
        means = self.sample(verts) + d[..., 0:3]
        q_delta = torch.cat([torch.exp(d[..., 3:4]), d[..., 4:7]], dim=-1)
        quats = F.normalize(quat_product(self.rotation_base[None], q_delta), dim=-1)
        scales = torch.exp(self.scaling_base[None] * torch.exp(d[..., 7:10]))
        return means, quats, scales

    def gaussians(self, frame: FlashFrame) -> Gaussians:
        means, quats, scales = self.gaussians_batch(frame)
        return Gaussians(means[0], quats[0], scales[0], self.opacities, self.sh, self.sh_degree)

    def frame_from_arrays(self, expr: Any, jaw6: Any, eyes12: Any, eyelids: Any) -> FlashFrame:
        def t(x: Any, n: int) -> torch.Tensor:
            v = torch.as_tensor(np.asarray(x, np.float32), device=self.device).reshape(-1, n)
            return v

        return FlashFrame(t(expr, 100), t(jaw6, 6), t(eyes12, 12), t(eyelids, 2))
