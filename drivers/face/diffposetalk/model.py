"""`DiffPoseTalkModel`: the whole inference network (HuBERT, audio projection, learned start/null features,
denoiser) assembled from a verified checkpoint, with strict key and shape checking."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from drivers.face.diffposetalk.checkpoint import (
    CHECKPOINT_FIX,
    HUBERT_PREFIX,
    SHAPE_DIM,
    CheckpointError,
    DiffPoseTalkCheckpoint,
    ModelArgs,
    normalise_weight_norm_keys,
)
from drivers.face.diffposetalk.denoiser import DenoisingNetwork
from drivers.face.diffposetalk.hubert import build_hubert, hubert_features
from drivers.face.diffposetalk.schedule import DiffusionSchedule, make_schedule, schedule_from_state

# Keys the reference loader drops or that are recomputed here.
_IGNORED = ("denoising_net.TE.pe",)
_IGNORED_PREFIXES = ("diffusion_sched.",)
_OPTIONAL = (HUBERT_PREFIX + "masked_spec_embed",)


class DiffPoseTalkModel(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        f = args.feature_dim
        self.audio_encoder = build_hubert(args.hubert)
        self.audio_feature_map = nn.Linear(args.hubert.hidden_size, f)
        self.start_audio_feat = nn.Parameter(torch.zeros(1, args.n_prev_motions, f))
        self.start_motion_feat = nn.Parameter(torch.zeros(1, args.n_prev_motions, args.motion_dim))
        self.null_style_feat: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, 1, args.d_style)) if "style" in args.guiding_conditions else None)
        self.null_audio_feat: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, 1, f)) if "audio" in args.guiding_conditions else None)
        self.denoising_net = DenoisingNetwork(
            motion_dim=args.motion_dim, person_dim=SHAPE_DIM + args.d_style, feature_dim=f, n_heads=args.n_heads,
            n_layers=args.n_layers, mlp_ratio=args.mlp_ratio, n_prev=args.n_prev_motions, n_motions=args.n_motions,
            n_diff_steps=args.n_diff_steps, use_indicator=args.use_indicator, align_mask_width=args.align_mask_width)
        self.schedule: DiffusionSchedule = make_schedule(args.n_diff_steps, args.diff_schedule)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.start_motion_feat.device

    def to(self, *a, **kw):  # type: ignore[no-untyped-def]
        out = super().to(*a, **kw)
        self.schedule = self.schedule.to(self.start_motion_feat.device)
        return out

    @classmethod
    def from_checkpoint(cls, ckpt: DiffPoseTalkCheckpoint, device: str | torch.device = "cpu",
                        progress: Callable[[str], None] | None = None) -> DiffPoseTalkModel:
        say = progress or (lambda _msg: None)
        say("building model")
        model = cls(ckpt.args)
        say("loading weights")
        try:
            model.load_checkpoint_state(ckpt.state)
            model.schedule = schedule_from_state(ckpt.state, ckpt.args.n_diff_steps, ckpt.args.diff_schedule)
        except ValueError as exc:  # CheckpointError included: the file contradicts its own settings
            raise CheckpointError(f"{ckpt.path}: {exc}; the file is damaged or edited: {CHECKPOINT_FIX}") from None
        say(f"moving to {device}")
        model.to(device)
        model.eval()
        return model

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        want_new = any("parametrizations.weight.original0" in k for k in own)
        state = normalise_weight_norm_keys(state, want_new)
        state = {k: v for k, v in state.items()
                 if k not in _IGNORED and not k.startswith(_IGNORED_PREFIXES) and not (k in _OPTIONAL and k not in own)}
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise CheckpointError(f"checkpoint has tensors this model does not know: {unexpected[:5]}"
                                  f"{' ...' if len(unexpected) > 5 else ''}; is it a DiffPoseTalk denoiser of a "
                                  "supported kind (decoder, HuBERT)?")
        missing = sorted(k for k in set(own) - set(state) if k not in _OPTIONAL)
        if missing:
            raise CheckpointError(f"checkpoint lacks tensors the model needs: {missing[:5]}"
                                  f"{' ...' if len(missing) > 5 else ''}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise CheckpointError(f"checkpoint tensor {k!r} has shape {tuple(v.shape)}, the model built from its "
                                      f"args expects {tuple(own[k].shape)}")
            if v.dtype == torch.bool and own[k].dtype != torch.bool:
                raise CheckpointError(f"checkpoint tensor {k!r} has dtype bool, expected {own[k].dtype}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)

    @torch.no_grad()
    def audio_features(self, audio: torch.Tensor, n_frames: int) -> torch.Tensor:
        """(N, S) normalised audio → (N, n_frames, feature_dim)."""
        hidden = hubert_features(self.audio_encoder, audio, n_frames, self.args.fps)
        return self.audio_feature_map(hidden)
