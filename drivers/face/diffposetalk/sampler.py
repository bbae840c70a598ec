"""Sampling one window: upstream's ancestral DDPM (exact, every step) and a deterministic DDIM-style sampler
over a subsequence of steps (fast, for streaming).

Classifier-free guidance batches the condition variants: row 0 has every guided condition nulled, then one
row per condition in the order audio, style. `incremental` adds each condition on top of the previous one
(x̂ = r0 + s_a(r1 − r0) + s_s(r2 − r1)); `independent` reproduces upstream's in-place update, where the
running result aliases r0, so the second term reads x̂ ← x̂ + s_s(r2 − x̂).
Random numbers come from a caller-supplied `NoiseFn`, so a test can feed recorded noise in upstream's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from drivers.face.diffposetalk.model import DiffPoseTalkModel

NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]
"""Returns a standard-normal tensor of the given shape (on the model's device)."""


def torch_noise(generator: torch.Generator, device: torch.device | str) -> NoiseFn:
    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=generator.device).to(device)

    return draw


def recorded_noise(draws: torch.Tensor) -> NoiseFn:
    """Serve rows of `draws` (n, ...) in order; each call takes one row (for reproducing a recorded run)."""
    state = {"i": 0}

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        i = state["i"]
        if i >= draws.shape[0]:
            raise IndexError(f"recorded noise exhausted after {i} draws")
        state["i"] = i + 1
        return draws[i].reshape(shape)

    return draw


def fixed_noise(seed: int, shape: tuple[int, ...]) -> NoiseFn:
    """One seeded standard-normal draw of `shape`, served at every call: with the deterministic DDIM sampler
    (which draws only x_T) it makes runs repeatable, e.g. streaming against offline on the same noise."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return lambda s: x.reshape(s)


@dataclass(frozen=True)
class SamplerOptions:
    kind: str = "ddpm"  # "ddpm": upstream's ancestral sampler over all steps; "ddim": deterministic subsequence
    steps: int | None = None  # DDIM step count (None: all)
    cfg_cond: tuple[str, ...] | None = None  # None: the checkpoint's guiding conditions
    cfg_scale: float | Sequence[float] = 1.15  # one scale, or one per condition in cfg_cond's order
    cfg_mode: str | None = None  # None: the checkpoint's
    dynamic_threshold: tuple[float, float, float] | None = None  # (ratio, min, max), e.g. (0.99, 1, 4)
    flexibility: float = 0.0


DEFAULT_OPTIONS = SamplerOptions()


@dataclass
class GuidedInputs:
    """The condition variants stacked along the batch: n_entries blocks of the caller's batch size."""

    audio: torch.Tensor
    person: torch.Tensor
    prev_motion: torch.Tensor
    prev_audio: torch.Tensor
    indicator: torch.Tensor | None
    n_entries: int
    scales: tuple[float, ...]
    mode: str


def guided_inputs(model: DiffPoseTalkModel, audio_feat: torch.Tensor, shape: torch.Tensor,
                  style: torch.Tensor | None, prev_motion: torch.Tensor | None, prev_audio: torch.Tensor | None,
                  indicator: torch.Tensor | None, opts: SamplerOptions) -> GuidedInputs:
    args = model.args
    b = audio_feat.shape[0]
    mode = opts.cfg_mode or args.cfg_mode
    conds = list(args.guiding_conditions if opts.cfg_cond is None else opts.cfg_cond)
    conds = [c for c in conds if c in ("audio", "style")]
    scales = list(opts.cfg_scale) if isinstance(opts.cfg_scale, Sequence) else [float(opts.cfg_scale)] * len(conds)
    if len(scales) != len(conds):
        raise ValueError(f"{len(conds)} guided conditions {conds} but {len(scales)} scales")
    order = ["audio", "style"]
    pairs = sorted(zip(conds, scales), key=lambda p: order.index(p[0]))
    for c, _ in pairs:
        if c == "audio" and model.null_audio_feat is None:
            raise ValueError("this checkpoint was not trained with audio guidance")
        if c == "style" and (model.null_style_feat is None or style is None):
            raise ValueError("style guidance needs a style vector and a checkpoint trained with style guidance")
    shape = shape.reshape(b, 1, -1)
    if args.use_style:
        if style is None:
            if model.null_style_feat is None:
                raise ValueError("this checkpoint needs a style vector")
            style = model.null_style_feat.expand(b, -1, -1)
        style = style.reshape(b, 1, -1)
    elif style is not None:
        raise ValueError("this checkpoint takes no style vector")
    if prev_motion is None:
        prev_motion = model.start_motion_feat.expand(b, -1, -1)
    if prev_audio is None:
        prev_audio = model.start_audio_feat.expand(b, -1, -1)
    guided = [c for c, _ in pairs]
    audio_null = (model.null_audio_feat.expand(b, audio_feat.shape[1], -1)  # type: ignore[union-attr]
                  if "audio" in guided else audio_feat)
    person_full = torch.cat([shape, style], dim=-1) if style is not None else shape
    if "style" in guided:
        person_null = torch.cat([shape, model.null_style_feat.expand(b, -1, -1)], dim=-1)  # type: ignore[union-attr]
    else:
        person_null = person_full
    audios, persons = [audio_null], [person_null]
    for c in guided:
        if c == "audio":
            audios.append(audio_feat)
            persons.append(person_null)
        else:
            if mode == "independent":
                audios.append(audio_null)
            elif mode == "incremental":
                audios.append(audio_feat)
            else:
                raise ValueError(f"unknown cfg_mode {mode!r}")
            persons.append(person_full)
    n = len(audios)
    return GuidedInputs(
        audio=torch.cat(audios), person=torch.cat(persons), prev_motion=torch.cat([prev_motion] * n),
        prev_audio=torch.cat([prev_audio] * n), indicator=None if indicator is None else torch.cat([indicator] * n),
        n_entries=n, scales=tuple(s for _, s in pairs), mode=mode)


def combine(results: torch.Tensor, g: GuidedInputs, n_motions: int, threshold: tuple[float, float, float] | None,
            ) -> torch.Tensor:
    """Threshold the raw outputs (optional) and apply classifier-free guidance → (B, n_motions, D)."""
    if threshold is not None:
        ratio, lo, hi = threshold
        flat = results[:, -n_motions:].reshape(results.shape[0], -1).abs()
        bound = torch.quantile(flat, ratio, dim=1).clamp(min=lo, max=hi)[:, None, None]
        results = torch.clamp(results, min=-bound, max=bound)
    parts = [r[:, -n_motions:] for r in results.chunk(g.n_entries)]
    out = parts[0]
    if g.mode == "incremental":
        for i, s in enumerate(g.scales):
            out = out + (parts[i + 1] - parts[i]) * s
    else:  # independent, with upstream's aliasing of the running sum and r0
        base = parts[0]
        for i, s in enumerate(g.scales):
            out = out + (parts[i + 1] - base) * s
            base = out
    return out


def ddim_timesteps(n_steps: int, steps: int) -> list[int]:
    """A decreasing subsequence of [1, n_steps] with `steps` entries, evenly spaced, always ending at 1."""
    steps = max(1, min(int(steps), n_steps))
    ts = torch.linspace(n_steps, 1, steps).round().long().tolist()
    out: list[int] = []
    for t in ts:
        if not out or t < out[-1]:
            out.append(int(t))
    return out


@torch.no_grad()
def sample_window(model: DiffPoseTalkModel, audio_feat: torch.Tensor, shape: torch.Tensor,
                  style: torch.Tensor | None, prev_motion: torch.Tensor | None, prev_audio: torch.Tensor | None,
                  x_T: torch.Tensor | None, indicator: torch.Tensor | None, noise: NoiseFn,
                  opts: SamplerOptions | None = None,
                  denoise: Callable[..., torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoise one window. audio_feat (B, n_motions, F); shape (B, 100) normalised; style (B, d) or None;
    returns (x0 (B, n_motions, D), x_T). `denoise` may replace the network call (same signature), e.g. by a
    CUDA-graphed copy."""
    opts = opts or DEFAULT_OPTIONS
    args = model.args
    b, n = audio_feat.shape[0], args.n_motions
    if audio_feat.shape[1] != n:
        raise ValueError(f"audio features must have {n} frames per window, got {audio_feat.shape[1]}")
    if x_T is None:
        x_T = noise((b, n, args.motion_dim))
    g = guided_inputs(model, audio_feat, shape, style, prev_motion, prev_audio, indicator, opts)
    net = denoise or model.denoising_net
    sch = model.schedule
    dev = audio_feat.device

    def predict(x: torch.Tensor, t: int) -> torch.Tensor:
        step = torch.full((b * g.n_entries,), t, dtype=torch.long, device=dev)
        res = net(torch.cat([x] * g.n_entries), g.audio, g.person, g.prev_motion, g.prev_audio, step, g.indicator)
        return combine(res, g, n, opts.dynamic_threshold)

    x = x_T
    if opts.kind == "ddpm":
        for t in range(sch.n_steps, 0, -1):
            z = noise((b, n, args.motion_dim)) if t > 1 else torch.zeros_like(x)
            alpha, ab, ab_prev = sch.alphas[t], sch.alpha_bars[t], sch.alpha_bars[t - 1]
            sigma = sch.sigma(t, opts.flexibility)
            pred = predict(x, t)
            if args.target == "noise":
                x = (x - (1 - alpha) / torch.sqrt(1 - ab) * pred) / torch.sqrt(alpha) + sigma * z
            else:
                c0 = (1 - ab_prev) * torch.sqrt(alpha) / (1 - ab)
                c1 = (1 - alpha) * torch.sqrt(ab_prev) / (1 - ab)
                x = c0 * x + c1 * pred + sigma * z
        return x, x_T
    if opts.kind != "ddim":
        raise ValueError(f"unknown sampler {opts.kind!r}; use 'ddpm' or 'ddim'")
    ts = ddim_timesteps(sch.n_steps, opts.steps or sch.n_steps)
    for i, t in enumerate(ts):
        ab = sch.alpha_bars[t]
        ab_next = sch.alpha_bars[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)
        pred = predict(x, t)
        if args.target == "noise":
            eps = pred
            x0 = (x - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)
        else:
            x0 = pred
            eps = (x - torch.sqrt(ab) * x0) / torch.sqrt(1 - ab)
        x = torch.sqrt(ab_next) * x0 + torch.sqrt(1 - ab_next) * eps
    return x, x_T
