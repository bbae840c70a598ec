"""The model work of streaming hops, apart from the engines that prepare them: a hop's inputs (`HopInput`),
running hops of one kind as one batched forward (`run_hops`), and the CUDA graphs that replay it
(`HopGraphs`). A hop run alone and the same hop run in a batch give the same frames."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import cast

import torch

from drivers.face.diffposetalk.graphed import GraphedCall
from drivers.face.diffposetalk.model import DiffPoseTalkModel
from drivers.face.diffposetalk.sampler import NoiseFn, SamplerOptions, sample_window


class HopGraphs:
    """CUDA graphs of hops on one model: the HuBERT front end, and per sampler setting the whole DDIM window
    (or each DDPM denoiser call). Each graph is captured per input signature, which includes the batch size.

    All of them draw their memory from one graph pool: they are replayed by one thread at a time (the hop
    batcher's, under its lock) and every call's output is copied out, so the pool holds what the largest batch
    size needs instead of the sum over every size and kind (each size's HuBERT activations, captured apart,
    came to about 200 MiB)."""

    def __init__(self, model: DiffPoseTalkModel) -> None:
        self.model = model
        self.pool = torch.cuda.graph_pool_handle()
        self.denoise = GraphedCall(model.denoising_net, what="the DiffPoseTalk denoiser", pool=self.pool)
        spf = model.args.samples_per_frame
        self.features = GraphedCall(lambda wav: model.audio_features(wav, wav.shape[1] // spf),
                                    what="the DiffPoseTalk HuBERT front end", capture_error_mode="relaxed",
                                    pool=self.pool)
        self._windows: dict[SamplerOptions, GraphedCall] = {}

    def captured(self) -> int:
        """Graphs captured so far, every batch size and kind counted."""
        return sum(call.captured() for call in (self.features, self.denoise, *self._windows.values()))

    def windows(self, sampler: SamplerOptions) -> GraphedCall | None:
        """The graphed whole DDIM window for these sampler settings (None for DDPM, which draws noise)."""
        if sampler.kind != "ddim":
            return None
        if sampler not in self._windows:
            model = self.model

            def window(feat: torch.Tensor, shape: torch.Tensor, style: torch.Tensor | None,
                       prev_motion: torch.Tensor | None, prev_audio: torch.Tensor | None, x_T: torch.Tensor,
                       indicator: torch.Tensor | None) -> torch.Tensor:
                return sample_window(model, feat, shape, style, prev_motion, prev_audio, x_T, indicator, _no_noise,
                                     sampler)[0]

            self._windows[sampler] = GraphedCall(window, what="a DiffPoseTalk DDIM window", pool=self.pool)
        return self._windows[sampler]


def _no_noise(shape: tuple[int, ...]) -> torch.Tensor:
    raise RuntimeError("the DDIM sampler drew noise inside a graphed window")


@dataclass(frozen=True)
class HopInput:
    """One hop's model inputs, made by its engine's `prepare`: every tensor has a batch dimension of 1, so
    hops of one `batch_key` stack into one forward."""

    wav: torch.Tensor  # (1, S) normalised audio: context, window and padding
    feature_offset: int  # the window's first frame in the HuBERT features of `wav`
    fixed: bool  # `wav` has the fixed length of a bounded context (its HuBERT front end may be graphed)
    shape: torch.Tensor  # (1, 100)
    style: torch.Tensor | None  # (1, d)
    prev_motion: torch.Tensor  # (1, p, D)
    prev_audio: torch.Tensor  # (1, p, F)
    x_T: torch.Tensor  # (1, n, D)
    indicator: torch.Tensor | None  # (1, n)
    sampler: SamplerOptions
    noise: NoiseFn  # the engine's draws (DDPM draws every step, so its hops are never batched)
    k: int  # real frames in the window
    emit: int  # frames this hop emits

    def batch_key(self) -> Hashable:
        """Hops with equal keys run as one batch and give each the frames it would get alone. DDIM draws no
        noise inside a window; a DDPM hop draws from its own engine's generator, so it runs alone."""
        alone = id(self) if self.sampler.kind != "ddim" else None
        return (self.sampler, tuple(self.wav.shape), self.feature_offset, self.fixed, self.style is None,
                self.indicator is None, alone)


HopRunner = Callable[[HopInput], tuple[torch.Tensor, torch.Tensor]]
"""Runs one hop's model work: → (window x0 (1, n, D), window audio features (1, n, F))."""


def _stack(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat(cast(list[torch.Tensor], list(tensors)))


@torch.no_grad()
def run_hops(model: DiffPoseTalkModel, hops: Sequence[HopInput], graphs: HopGraphs | None,
             pad_to: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The model work of hops sharing one `batch_key` as one forward: the HuBERT front end over every hop's
    audio, then one denoising window for all; each hop gets its row. `pad_to` repeats the last hop up to that
    many rows (a batch size whose CUDA graph exists); the extra rows are computed and dropped."""
    first = hops[0]
    rows = list(hops) + [hops[-1]] * max(0, pad_to - len(hops))
    n = model.args.n_motions
    wav = torch.cat([h.wav for h in rows])
    if graphs is not None and first.fixed:
        feats = graphs.features(wav)
    else:
        feats = model.audio_features(wav, wav.shape[1] // model.args.samples_per_frame)
    window_feat = feats[:, first.feature_offset: first.feature_offset + n]
    shape = torch.cat([h.shape for h in rows])
    style = _stack([h.style for h in rows])
    prev_motion = torch.cat([h.prev_motion for h in rows])
    prev_audio = torch.cat([h.prev_audio for h in rows])
    x_T = torch.cat([h.x_T for h in rows])
    indicator = _stack([h.indicator for h in rows])
    window = None if graphs is None else graphs.windows(first.sampler)
    if window is not None:
        x0 = window(window_feat, shape, style, prev_motion, prev_audio, x_T, indicator)
    else:
        noise = first.noise if len(rows) == 1 else _no_noise
        x0, _ = sample_window(model, window_feat, shape, style, prev_motion, prev_audio, x_T, indicator, noise,
                              first.sampler, denoise=None if graphs is None else graphs.denoise)
    return [(x0[i:i + 1], window_feat[i:i + 1]) for i in range(len(hops))]
