"""The diffusion noise schedule, computed exactly as upstream does (all four kinds it offers).

Index 0 is padding (β₀ = 0), so arrays have `n_steps + 1` entries and step t ∈ [1, n_steps] indexes them
directly. ᾱ is the cumulative product of α accumulated as a sequential sum of logs in float32, which is what
upstream stores in its checkpoints; a loader can use the stored buffers or these, they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCHEDULE_KINDS = ("linear", "quadratic", "sigmoid", "cosine")


@dataclass(frozen=True)
class DiffusionSchedule:
    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor
    sigmas_flex: torch.Tensor
    sigmas_inflex: torch.Tensor

    @property
    def n_steps(self) -> int:
        return int(self.betas.shape[0]) - 1

    def sigma(self, t: int, flexibility: float = 0.0) -> torch.Tensor:
        """Posterior noise scale: 0 → the posterior std (upstream's default), 1 → √β."""
        if not 0.0 <= flexibility <= 1.0:
            raise ValueError("flexibility must be in [0, 1]")
        return self.sigmas_flex[t] * flexibility + self.sigmas_inflex[t] * (1 - flexibility)

    def to(self, device: torch.device | str) -> DiffusionSchedule:
        return DiffusionSchedule(*(x.to(device) for x in
                                   (self.betas, self.alphas, self.alpha_bars, self.sigmas_flex, self.sigmas_inflex)))


def make_schedule(n_steps: int, kind: str = "cosine", beta_1: float = 1e-4, beta_T: float = 0.02,
                  s: float = 0.008) -> DiffusionSchedule:
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    if kind == "linear":
        betas = torch.linspace(beta_1, beta_T, n_steps)
    elif kind == "quadratic":
        betas = torch.linspace(beta_1**0.5, beta_T**0.5, n_steps) ** 2
    elif kind == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-5, 5, n_steps)) * (beta_T - beta_1) + beta_1
    elif kind == "cosine":
        x = torch.linspace(0, n_steps, n_steps + 1)
        ab = torch.cos(((x / n_steps) + s) / (1 + s) * torch.pi * 0.5) ** 2
        ab = ab / ab[0]
        betas = torch.clip(1 - (ab[1:] / ab[:-1]), 0.0001, 0.999)
    else:
        raise ValueError(f"unknown diffusion schedule {kind!r}; choose one of {SCHEDULE_KINDS}")
    betas = torch.cat([torch.zeros(1), betas])
    alphas = 1 - betas
    log_alphas = torch.log(alphas)
    for i in range(1, log_alphas.shape[0]):
        log_alphas[i] += log_alphas[i - 1]
    alpha_bars = log_alphas.exp()
    sigmas_flex = torch.sqrt(betas)
    inflex = torch.zeros_like(betas)
    for i in range(1, betas.shape[0]):
        inflex[i] = ((1 - alpha_bars[i - 1]) / (1 - alpha_bars[i])) * betas[i]
    return DiffusionSchedule(betas, alphas, alpha_bars, sigmas_flex, torch.sqrt(inflex))


def schedule_from_state(state: dict[str, torch.Tensor], n_steps: int, kind: str, prefix: str = "diffusion_sched.",
                        ) -> DiffusionSchedule:
    """The stored schedule buffers when the checkpoint has them (checked against a recomputation), else computed."""
    computed = make_schedule(n_steps, kind)
    names = ("betas", "alphas", "alpha_bars", "sigmas_flex", "sigmas_inflex")
    if not all(prefix + n in state for n in names):
        return computed
    stored = DiffusionSchedule(*(state[prefix + n].detach().float().cpu() for n in names))
    for n in names:
        a, b = getattr(stored, n), getattr(computed, n)
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-6):
            raise ValueError(f"checkpoint buffer {prefix + n} does not match a {kind!r} schedule of {n_steps} steps")
    return stored
