"""The HuBERT audio front end, built from sizes found in the checkpoint (nothing is fetched from a hub).

Upstream runs transformers' HubertModel with a patched forward: CNN features at 50 Hz, resized to twice the
video frame count, feature projection, the encoder's last hidden state (no attention maps), then a linear
resize 2L → L (the mean of frame pairs) before the model's own 768 → feature_dim projection. The waveform is
edge-padded first (two successive 20-sample reflect pads per side for lengths that are multiples of 320).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bridge.core.errors import UserError

_DEFAULT_STRIDES = (5, 2, 2, 2, 2, 2, 2)


class HubertShapeError(UserError, ValueError):
    """The checkpoint's HuBERT tensors do not describe a HuBERT encoder."""


@dataclass(frozen=True)
class HubertSizes:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    pos_conv_kernel: int
    pos_conv_groups: int
    layer_norm_eps: float = 1e-5


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise HubertShapeError(f"checkpoint is missing the HuBERT tensor {key!r}")
    return tuple(state[key].shape)


def hubert_sizes(state: dict[str, torch.Tensor], prefix: str, ns: dict[str, Any] | None = None) -> HubertSizes:
    """Read every HuBERT size from the state-dict shapes (head count: args or hidden/64, as in HuBERT-base)."""
    ns = ns or {}
    convs = sorted({int(k[len(prefix):].split(".")[2]) for k in state
                    if k.startswith(prefix + "feature_extractor.conv_layers.")})
    if not convs or convs != list(range(len(convs))):
        raise HubertShapeError(f"checkpoint has no usable {prefix}feature_extractor.conv_layers.* tensors")
    dims, kernels = [], []
    in_ch = 1
    for i in convs:
        key = f"{prefix}feature_extractor.conv_layers.{i}.conv.weight"
        out_ch, cin, k = _shape(state, key)
        if cin != in_ch:
            raise HubertShapeError(f"{key} has {cin} input channels, expected {in_ch}")
        dims.append(out_ch)
        kernels.append(k)
        in_ch = out_ch
    if f"{prefix}feature_extractor.conv_layers.0.conv.bias" in state:
        raise HubertShapeError("HuBERT convolutions with bias are not supported (HuBERT-base has none)")
    strides = ns.get("hubert_conv_stride") or (_DEFAULT_STRIDES if len(convs) == 7 else None)
    if strides is None:
        raise HubertShapeError(f"HuBERT with {len(convs)} conv layers has unknown strides; expected 7 layers")
    hidden, proj_in = _shape(state, f"{prefix}feature_projection.projection.weight")
    if proj_in != dims[-1]:
        raise HubertShapeError(f"{prefix}feature_projection.projection.weight takes {proj_in}, CNN gives {dims[-1]}")
    layers = sorted({int(k[len(prefix):].split(".")[2]) for k in state if k.startswith(prefix + "encoder.layers.")})
    if not layers or layers != list(range(len(layers))):
        raise HubertShapeError(f"checkpoint has no usable {prefix}encoder.layers.* tensors (found {layers})")
    inter, h2 = _shape(state, f"{prefix}encoder.layers.0.feed_forward.intermediate_dense.weight")
    if h2 != hidden:
        raise HubertShapeError(f"{prefix}encoder.layers.0.feed_forward.intermediate_dense.weight width {h2} != {hidden}")
    v_key = next((prefix + "encoder.pos_conv_embed.conv." + s for s in
                  ("parametrizations.weight.original1", "weight_v") if prefix + "encoder.pos_conv_embed.conv." + s in state),
                 None)
    if v_key is None:
        raise HubertShapeError(f"checkpoint is missing {prefix}encoder.pos_conv_embed.conv weight-norm tensors "
                               "(parametrizations.weight.original0/1 or weight_g/weight_v)")
    v_out, v_in, pk = state[v_key].shape
    if v_out != hidden or hidden % v_in:
        raise HubertShapeError(f"{v_key} has shape {tuple(state[v_key].shape)}, inconsistent with hidden size {hidden}")
    heads = int(ns.get("hubert_num_heads") or max(1, hidden // 64))
    return HubertSizes(hidden_size=hidden, num_layers=len(layers), num_heads=heads, intermediate_size=inter,
                       conv_dim=tuple(dims), conv_kernel=tuple(kernels), conv_stride=tuple(strides),
                       pos_conv_kernel=int(pk), pos_conv_groups=hidden // int(v_in))


def build_hubert(sizes: HubertSizes) -> nn.Module:
    """A transformers HubertModel with random weights and exactly these sizes (no hub access)."""
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=sizes.hidden_size, num_hidden_layers=sizes.num_layers, num_attention_heads=sizes.num_heads,
        intermediate_size=sizes.intermediate_size, conv_dim=list(sizes.conv_dim), conv_kernel=list(sizes.conv_kernel),
        conv_stride=list(sizes.conv_stride), num_conv_pos_embeddings=sizes.pos_conv_kernel,
        num_conv_pos_embedding_groups=sizes.pos_conv_groups, feat_extract_norm="group", conv_bias=False,
        do_stable_layer_norm=False, feat_proj_layer_norm=True, hidden_act="gelu", layer_norm_eps=sizes.layer_norm_eps,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
        mask_time_prob=0.0,
    )
    model = HubertModel(config)
    model.eval()
    return model


def pad_audio(audio: torch.Tensor, unit: int = 320, threshold: int = 80) -> torch.Tensor:
    """Upstream's edge padding: reflect-pad twice by a quarter of the missing length per side, plus a
    one-sample replicate pad when that quarter is odd. (N, S) → (N, S + about `threshold`)."""
    n = audio.shape[-1]
    side = math.ceil((unit * (n // unit) + threshold - n) / 2)
    if side >= 0:
        reflect, replicate = side // 2, side % 2
        if reflect > 0:
            audio = F.pad(audio, (reflect, reflect), mode="reflect")
            audio = F.pad(audio, (reflect, reflect), mode="reflect")
        if replicate > 0:
            audio = F.pad(audio.unsqueeze(1), (1, 1), mode="replicate").squeeze(1)
    return audio


def hubert_features(hubert: Any, audio: torch.Tensor, n_frames: int, fps: int) -> torch.Tensor:
    """(N, S) normalised 16 kHz audio → (N, n_frames, hidden) at the video frame rate, as upstream computes it."""
    want = 2 * n_frames
    feats = hubert.feature_extractor(pad_audio(audio)).transpose(1, 2)  # (N, T50, C)
    feats = feats[:, : round(want * 50 / fps)]
    if feats.shape[1] != want:
        feats = F.interpolate(feats.transpose(1, 2), size=want, align_corners=True, mode="linear").transpose(1, 2)
    hidden = hubert.feature_projection(feats)
    if isinstance(hidden, tuple):
        hidden = hidden[0]
    out = hubert.encoder(hidden)
    last = out[0] if isinstance(out, tuple) else out.last_hidden_state
    last = F.interpolate(last.transpose(1, 2), size=n_frames, align_corners=False, mode="linear")
    return last.transpose(1, 2)
