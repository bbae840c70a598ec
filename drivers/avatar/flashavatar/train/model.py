"""The FlashAvatar being trained: the deformation MLP and the per-Gaussian parameters, on top of the inference
model's subject geometry (texel table, FLAME bound to the tracked shape, canonical points).

The inference `FlashAvatarModel` is built here with a blank checkpoint of the right size; training then only
adds what is learned. Gaussians come out of `apply_deformation`, the function rendering uses, so a checkpoint
means the same thing to the trainer and to the avatar driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drivers.avatar.flashavatar.checkpoint import COND_DIM, PE_DIM, FlashAvatarCheckpoint
from drivers.avatar.flashavatar.model import (
    DeformMLP,
    FlashAvatarModel,
    FlashFrame,
    SubjectFiles,
    apply_deformation,
    positional_encoding,
)
from drivers.avatar.flashavatar.train.init import initial_gaussians
from drivers.avatar.splat.gaussians import Gaussians

SH_DEGREE = 3
SH_COEFFS = (SH_DEGREE + 1) ** 2
HIDDEN_DIM = 256  # upstream's MLP: 6 x 256 ReLU layers
HIDDEN_LAYERS = 6
GAUSSIAN_PARAMS = ("features_dc", "features_rest", "scaling_base", "rotation_base", "opacity")


def blank_checkpoint(n: int, mlp: DeformMLP) -> FlashAvatarCheckpoint:
    """A checkpoint of `n` neutral Gaussians around `mlp`: what the inference model needs to be built."""
    first = mlp.fcs[0]
    assert isinstance(first, nn.Linear)
    rotation = torch.zeros(n, 4)
    rotation[:, 0] = 1.0
    return FlashAvatarCheckpoint(
        mlp_state={k: v.detach().cpu() for k, v in mlp.state_dict().items()}, active_sh_degree=0,
        features_dc=torch.zeros(n, 1, 3), features_rest=torch.zeros(n, SH_COEFFS - 1, 3),
        scaling_base=torch.full((n, 3), -5.0), rotation_base=rotation, opacity=torch.zeros(n, 1), iteration=0,
        hidden_dim=first.out_features, hidden_layers=len(mlp.fcs), input_dim=first.in_features,
        output_dim=mlp.output_linear.out_features,
    )


class TrainableAvatar(nn.Module):
    """Learned parameters (upstream's names) plus the frozen subject they deform with."""

    features_dc: nn.Parameter  # (N,1,3) SH DC
    features_rest: nn.Parameter  # (N,15,3) SH degrees 1-3
    scaling_base: nn.Parameter  # (N,3) log scale, multiplied by the MLP's coefficient
    rotation_base: nn.Parameter  # (N,4) wxyz, left factor of the MLP's rotation
    opacity: nn.Parameter  # (N,1) logit
    pe: torch.Tensor  # (N,51) positional encoding of the canonical points

    def __init__(self, files: SubjectFiles, shape: np.ndarray, device: torch.device | str,
                 hidden_dim: int = HIDDEN_DIM, hidden_layers: int = HIDDEN_LAYERS, zero_head: bool = False) -> None:
        """`zero_head` starts the MLP's output layer at zero, so the deformation starts at none and the Gaussians
        on the mesh; upstream keeps PyTorch's default init, whose constant output shifts them by centimetres at
        first (decimetres with a small MLP), which training then undoes."""
        super().__init__()
        dev = torch.device(device)
        self.mlp = DeformMLP(PE_DIM + COND_DIM, 10, hidden_dim, hidden_layers)
        if zero_head:
            nn.init.zeros_(self.mlp.output_linear.weight)
            nn.init.zeros_(self.mlp.output_linear.bias)
        n = files.num_gaussians
        self.subject = FlashAvatarModel(blank_checkpoint(n, self.mlp), files.flame, files.raster, files.mesh_faces,
                                        files.boundary, torch.as_tensor(np.asarray(shape, np.float32)), device=dev)
        self.mlp.to(dev)
        blank = self.subject.ckpt  # placeholders until `initialise` or a restored checkpoint
        for name in GAUSSIAN_PARAMS:
            setattr(self, name, nn.Parameter(getattr(blank, name).to(dev).clone()))
        self.register_buffer("pe", positional_encoding(self.subject.canonical).contiguous(), persistent=False)
        self.active_sh_degree = 0

    @property
    def num_gaussians(self) -> int:
        return int(self.features_dc.shape[0])

    def gaussian_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name in GAUSSIAN_PARAMS:
            yield name, getattr(self, name)

    def one_up_sh_degree(self) -> None:
        self.active_sh_degree = min(SH_DEGREE, self.active_sh_degree + 1)

    # -- per frame ---------------------------------------------------------------------------------------------
    def frame_vertices(self, cond: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """Posed FLAME vertices (F,V,3) for conditions (F,120); FLAME has nothing to learn, so training computes
        them once per frame."""
        out = []
        with torch.no_grad():
            for s in range(0, cond.shape[0], chunk):
                c = cond[s:s + chunk].to(self.pe.device)
                out.append(self.subject.pose_vertices(FlashFrame(c[:, :100], c[:, 100:106], c[:, 106:118],
                                                                 c[:, 118:120])))
        return torch.cat(out)

    def deform(self, cond: torch.Tensor) -> torch.Tensor:
        """tanh(MLP([PE(canonical), cond])) (B,N,10) with the first layer split, so the (N,171) input is never
        built: its condition half is one (B,120) product broadcast over the Gaussians."""
        first = self.mlp.fcs[0]
        assert isinstance(first, nn.Linear)
        w: torch.Tensor = first.weight
        h = F.linear(self.pe, w[:, :PE_DIM])[None] + F.linear(cond, w[:, PE_DIM:], first.bias)[:, None]
        h = torch.relu(h)
        for layer in list(self.mlp.fcs)[1:]:
            h = torch.relu(layer(h))
        return torch.tanh(self.mlp.output_linear(h))

    def forward(self, cond: torch.Tensor, vertices: torch.Tensor, on_grad: Callable[[], None] | None = None
                ) -> tuple[torch.Tensor, ...]:
        """means, quats, scales (B,N,·) for conditions (B,120) and posed vertices (B,V,3). `on_grad` is called
        during backward when the MLP's output has its gradient (the profiler's split between the rasteriser's
        and the MLP's backward passes)."""
        d = self.deform(cond)
        if on_grad is not None and d.requires_grad:
            d.register_hook(lambda _grad: on_grad())
        return apply_deformation(d, self.subject.sample(vertices), self.rotation_base, self.scaling_base)

    def gaussians(self, means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor) -> Gaussians:
        """One frame's renderable Gaussians (means etc. of one frame, (N,·))."""
        colors = torch.cat([self.features_dc, self.features_rest], dim=1)
        return Gaussians(means, quats, scales, torch.sigmoid(self.opacity)[:, 0], colors, self.active_sh_degree)

    def initialise(self, points: torch.Tensor) -> None:
        """Upstream's start: every Gaussian parameter from the Gaussians' positions on the first frame."""
        init = initial_gaussians(points.detach())
        with torch.no_grad():
            for name, p in self.gaussian_parameters():
                p.copy_(init[name])
        self.active_sh_degree = 0
