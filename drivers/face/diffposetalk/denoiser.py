"""The denoising transformer: a post-LN transformer decoder over [person token, previous motion, noisy motion]
with cross-attention to [previous audio, current audio] under a diagonal alignment mask.

The diffusion step enters only through the person token (sinusoid → MLP, added to the projected shape+style);
a learnable positional embedding is added to all query tokens; motion tokens carry an extra indicator channel
(0 for the previous frames and for padded frames, 1 for real frames) when the checkpoint was trained with it.
Parameter names match upstream's state dict so checkpoints load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(n_positions: int, dim: int) -> torch.Tensor:
    """(n_positions, dim): sin on even channels, cos on odd ones, base 10000 (the diffusion-step table)."""
    pos = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table


def alignment_mask(n_prev: int, n_motions: int, width: int) -> torch.Tensor:
    """(1 + n_prev + n_motions, n_prev + n_motions) bool, True = blocked: motion token k sees audio tokens
    within `width - 1` of k; the person token (row 0) sees all of them."""
    n = n_prev + n_motions
    idx = torch.arange(n)
    band = (idx.unsqueeze(1) - idx.unsqueeze(0)).abs() > (width - 1)
    return torch.cat([torch.zeros(1, n, dtype=torch.bool), band], dim=0)


class DenoisingNetwork(nn.Module):
    def __init__(self, *, motion_dim: int, person_dim: int, feature_dim: int, n_heads: int, n_layers: int,
                 mlp_ratio: int, n_prev: int, n_motions: int, n_diff_steps: int, use_indicator: bool,
                 align_mask_width: int) -> None:
        super().__init__()
        self.motion_dim = motion_dim
        self.n_prev = n_prev
        self.n_motions = n_motions
        self.use_indicator = use_indicator
        self.step_table: torch.Tensor
        self.register_buffer("step_table", sinusoid_table(n_diff_steps + 1, feature_dim), persistent=False)
        self.diff_step_map = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.GELU(),
                                           nn.Linear(feature_dim, feature_dim))
        self.PE = nn.Parameter(torch.zeros(1, 1 + n_prev + n_motions, feature_dim))
        self.person_proj = nn.Linear(person_dim, feature_dim)
        self.feature_proj = nn.Linear(motion_dim + (1 if use_indicator else 0), feature_dim)
        layer = nn.TransformerDecoderLayer(d_model=feature_dim, nhead=n_heads, dim_feedforward=mlp_ratio * feature_dim,
                                           dropout=0.1, activation="gelu", batch_first=True)
        self.transformer = nn.TransformerDecoder(layer, num_layers=n_layers)
        self.alignment_mask: torch.Tensor | None
        if align_mask_width > 0:
            self.register_buffer("alignment_mask", alignment_mask(n_prev, n_motions, align_mask_width))
        else:
            self.alignment_mask = None
        self.motion_dec = nn.Sequential(nn.Linear(feature_dim, feature_dim // 2), nn.GELU(),
                                        nn.Linear(feature_dim // 2, motion_dim))

    def step_embedding(self, step: torch.Tensor) -> torch.Tensor:
        return self.diff_step_map(self.step_table[step]).unsqueeze(1)  # (N, 1, F)

    def forward(self, motion: torch.Tensor, audio_feat: torch.Tensor, person: torch.Tensor,
                prev_motion: torch.Tensor, prev_audio: torch.Tensor, step: torch.Tensor,
                indicator: torch.Tensor | None = None) -> torch.Tensor:
        """motion (N, L, D) noisy; audio_feat (N, L, F); person (N, 1, P); prev_motion (N, Lp, D);
        prev_audio (N, Lp, F); step (N,) ints; indicator (N, L) → x0 (or noise) prediction (N, Lp + L, D)."""
        person_tok = self.person_proj(person) + self.step_embedding(step)
        feats = torch.cat([prev_motion, motion], dim=1)
        if self.use_indicator:
            if indicator is None:
                indicator = torch.ones(motion.shape[:2], device=motion.device, dtype=motion.dtype)
            ind = torch.cat([torch.zeros(indicator.shape[0], self.n_prev, device=indicator.device,
                                         dtype=motion.dtype), indicator.to(motion.dtype)], dim=1)
            feats = torch.cat([feats, ind.unsqueeze(-1)], dim=-1)
        tokens = torch.cat([person_tok, self.feature_proj(feats)], dim=1) + self.PE
        memory = torch.cat([prev_audio, audio_feat], dim=1)
        out = self.transformer(tokens, memory, memory_mask=self.alignment_mask)
        return self.motion_dec(out[:, 1:])
