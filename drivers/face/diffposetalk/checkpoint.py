"""Safe loading of DiffPoseTalk checkpoints, style vectors, shape vectors and coefficient statistics.

Released checkpoints are `torch.save`d dicts `{'args': argparse.Namespace, 'model': state_dict, 'iter': int}`
whose `args` hold pathlib paths. They are read with `weights_only=True` and an allow-list of exactly those
stdlib classes (`drivers.safe_load`), so a malicious file cannot run code. Every model size is taken from
`args` and cross-checked against the state-dict shapes; anything inconsistent is refused naming the key.
"""

from __future__ import annotations

import argparse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bridge.core.errors import UserError
from drivers.face.diffposetalk.hubert import HubertShapeError, HubertSizes, hubert_sizes
from drivers.safe_load import ARGPARSE_PATHS, RefusedContent, SafeLoadError, check_numpy_file, load_torch

HUBERT_PREFIX = "audio_encoder."
SHAPE_DIM = 100
N_EXP = 50

_WN_NEW = ("parametrizations.weight.original0", "parametrizations.weight.original1")
_WN_OLD = ("weight_g", "weight_v")
_POS_CONV = "audio_encoder.encoder.pos_conv_embed.conv."


class CheckpointError(UserError, ValueError):
    """A checkpoint, style, shape or statistics file that cannot be used; the message says why and what to do."""


CHECKPOINT_FIX = ("use the iter_*.pt saved by a DiffPoseTalk training run for face.diffposetalk.checkpoint "
                  "(see install/models.md)")


@dataclass(frozen=True)
class ModelArgs:
    """The hyper-parameters inference needs, resolved from the stored args and verified against shapes."""

    motion_dim: int  # 54 with head pose, 51 without
    predict_head_pose: bool
    feature_dim: int
    n_heads: int
    n_layers: int
    mlp_ratio: int
    n_motions: int
    n_prev_motions: int
    fps: int
    n_diff_steps: int
    diff_schedule: str
    target: str
    use_style: bool
    d_style: int
    use_indicator: bool
    align_mask_width: int
    use_learnable_pe: bool
    guiding_conditions: tuple[str, ...]
    cfg_mode: str
    pad_mode: str
    hubert: HubertSizes
    style_enc_ckpt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_frame(self) -> int:
        return round(16000 / self.fps)

    @property
    def window_samples(self) -> int:
        return self.samples_per_frame * self.n_motions


@dataclass
class DiffPoseTalkCheckpoint:
    args: ModelArgs
    state: dict[str, torch.Tensor]
    iteration: int
    path: Path


def _safe_torch_load(path: Path) -> Any:
    try:
        return load_torch(path, allow=ARGPARSE_PATHS)
    except RefusedContent as exc:
        raise CheckpointError(
            f"{path}: refused to load: it contains objects other than tensors, argparse.Namespace and pathlib "
            f"paths ({exc.reason}). Only load DiffPoseTalk checkpoints from a source you trust; this loader "
            "never unpickles arbitrary code."
        ) from None
    except SafeLoadError as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({exc.reason}). "
            "The file may be truncated or not a DiffPoseTalk iter_*.pt; download it again."
        ) from None


def _get(ns: dict[str, Any], key: str, default: Any) -> Any:
    value = ns.get(key)
    return default if value is None else value


def _resolve_aliases(ns: dict[str, Any]) -> dict[str, Any]:
    """Upstream's legacy argument names (older training runs) mapped onto the current ones."""
    ns = dict(ns)
    if ns.get("align_mask_width") is None:
        ns["align_mask_width"] = (1 if ns["use_alignment_mask"] else 0) if "use_alignment_mask" in ns else 0
    if ns.get("no_head_pose") is None and "predict_head_pose" in ns:
        ns["no_head_pose"] = not ns["predict_head_pose"]
    if ns.get("no_use_learnable_pe") is None and "use_learnable_pe" in ns:
        ns["no_use_learnable_pe"] = not ns["use_learnable_pe"]
    return ns


def normalise_weight_norm_keys(state: dict[str, torch.Tensor], want_new: bool) -> dict[str, torch.Tensor]:
    """Rename the HuBERT positional-conv weight-norm tensors to the spelling the built module uses."""
    src, dst = (_WN_OLD, _WN_NEW) if want_new else (_WN_NEW, _WN_OLD)
    out = dict(state)
    for s, d in zip(src, dst):
        if _POS_CONV + s in out:
            if _POS_CONV + d in out:
                raise CheckpointError(f"checkpoint has both {_POS_CONV + s} and {_POS_CONV + d}; it is corrupt")
            out[_POS_CONV + d] = out.pop(_POS_CONV + s)
    return out


def _shape(state: dict[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"checkpoint is missing the tensor {key!r}; is this a DiffPoseTalk denoiser checkpoint?")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"checkpoint tensor {key!r} has shape {shape}, expected {ndim} dimensions")
    return shape


def _expect(key: str, got: Any, want: Any, what: str) -> None:
    if got != want:
        raise CheckpointError(f"checkpoint tensor {key!r} does not match the stored args: {what} is {got}, args say {want}")


def resolve_args(ns: dict[str, Any], state: dict[str, torch.Tensor]) -> ModelArgs:
    """Combine the stored args (with upstream's defaults for missing ones) and the state-dict shapes."""
    ns = _resolve_aliases(ns)
    if _get(ns, "architecture", "decoder") != "decoder":
        raise CheckpointError(f"architecture {ns['architecture']!r} is not supported (only 'decoder' exists upstream)")
    if _get(ns, "audio_model", "hubert") != "hubert":
        raise CheckpointError(f"audio_model {ns['audio_model']!r} is not supported; use a HuBERT checkpoint")
    if _get(ns, "rot_repr", "aa") != "aa":
        raise CheckpointError(f"rot_repr {ns['rot_repr']!r} is not supported (only axis-angle 'aa')")

    d_out, _ = _shape(state, "denoising_net.motion_dec.2.weight", 2)
    predict_head = not bool(_get(ns, "no_head_pose", False))
    _expect("denoising_net.motion_dec.2.weight", d_out, 54 if predict_head else 51, "motion dimension")
    feature_dim = int(_get(ns, "feature_dim", 512))
    fp_out, fp_in = _shape(state, "denoising_net.feature_proj.weight", 2)
    _expect("denoising_net.feature_proj.weight", fp_out, feature_dim, "feature_dim")
    use_indicator = bool(_get(ns, "use_indicator", False))
    _expect("denoising_net.feature_proj.weight", fp_in, d_out + (1 if use_indicator else 0), "input width")

    n_layers = int(_get(ns, "n_layers", 8))
    found = {int(k.split(".")[3]) for k in state if k.startswith("denoising_net.transformer.layers.")}
    _expect("denoising_net.transformer.layers", len(found), n_layers, "layer count")
    if found != set(range(n_layers)):
        raise CheckpointError(f"denoising_net.transformer.layers has indices {sorted(found)}, expected 0..{n_layers - 1}")
    n_heads = int(_get(ns, "n_heads", 8))
    if feature_dim % n_heads:
        raise CheckpointError(f"feature_dim {feature_dim} is not divisible by n_heads {n_heads}")
    mlp_ratio = int(_get(ns, "mlp_ratio", 4))
    ff, _ = _shape(state, "denoising_net.transformer.layers.0.linear1.weight", 2)
    _expect("denoising_net.transformer.layers.0.linear1.weight", ff, mlp_ratio * feature_dim, "FFN width")

    n_motions = int(_get(ns, "n_motions", 100))
    n_prev = int(_get(ns, "n_prev_motions", 10))
    use_learnable_pe = not bool(_get(ns, "no_use_learnable_pe", False))
    if not use_learnable_pe:
        raise CheckpointError("checkpoints without a learnable positional encoding are not supported")
    _expect("denoising_net.PE", _shape(state, "denoising_net.PE", 3), (1, 1 + n_prev + n_motions, feature_dim),
            "shape")
    _expect("start_motion_feat", _shape(state, "start_motion_feat", 3), (1, n_prev, d_out), "shape")
    _expect("start_audio_feat", _shape(state, "start_audio_feat", 3), (1, n_prev, feature_dim), "shape")

    use_style = ns.get("style_enc_ckpt") is not None
    d_style = int(_get(ns, "d_style", 128)) if use_style else 0
    _, pin = _shape(state, "denoising_net.person_proj.weight", 2)
    _expect("denoising_net.person_proj.weight", pin, SHAPE_DIM + d_style, "person feature width")

    conds = str(_get(ns, "guiding_conditions", "audio,style") or "")
    guiding = tuple(c for c in conds.split(",") if c in ("audio", "style"))
    if "style" in guiding:
        if not use_style:
            raise CheckpointError("guiding_conditions names 'style' but the model has no style input")
        _expect("null_style_feat", _shape(state, "null_style_feat", 3), (1, 1, d_style), "shape")
    if "audio" in guiding:
        _expect("null_audio_feat", _shape(state, "null_audio_feat", 3), (1, 1, feature_dim), "shape")

    align = int(_get(ns, "align_mask_width", 1))
    if align > 0:
        _expect("denoising_net.alignment_mask", _shape(state, "denoising_net.alignment_mask", 2),
                (1 + n_prev + n_motions, n_prev + n_motions), "shape")
    n_steps = int(_get(ns, "n_diff_steps", 500))
    if "diffusion_sched.betas" in state:
        _expect("diffusion_sched.betas", tuple(state["diffusion_sched.betas"].shape), (n_steps + 1,), "shape")
    target = str(_get(ns, "target", "sample"))
    if target not in ("sample", "noise"):
        raise CheckpointError(f"unknown diffusion target {target!r}")
    cfg_mode = str(_get(ns, "cfg_mode", "incremental"))
    if cfg_mode not in ("incremental", "independent"):
        raise CheckpointError(f"unknown cfg_mode {cfg_mode!r}")
    pad_mode = str(_get(ns, "pad_mode", "zero"))
    if pad_mode not in ("zero", "replicate"):
        raise CheckpointError(f"unknown pad_mode {pad_mode!r}")
    fmap_out, fmap_in = _shape(state, "audio_feature_map.weight", 2)
    _expect("audio_feature_map.weight", fmap_out, feature_dim, "output width")
    try:
        hub = hubert_sizes(state, HUBERT_PREFIX, ns)
    except HubertShapeError as exc:
        raise CheckpointError(str(exc)) from None
    _expect("audio_feature_map.weight", fmap_in, hub.hidden_size, "input width (HuBERT hidden size)")
    sec = ns.get("style_enc_ckpt")
    return ModelArgs(
        motion_dim=d_out, predict_head_pose=predict_head, feature_dim=feature_dim, n_heads=n_heads,
        n_layers=n_layers, mlp_ratio=mlp_ratio, n_motions=n_motions, n_prev_motions=n_prev,
        fps=int(_get(ns, "fps", 25)), n_diff_steps=n_steps, diff_schedule=str(_get(ns, "diff_schedule", "cosine")),
        target=target, use_style=use_style, d_style=d_style, use_indicator=use_indicator, align_mask_width=align,
        use_learnable_pe=use_learnable_pe, guiding_conditions=guiding, cfg_mode=cfg_mode, pad_mode=pad_mode,
        hubert=hub, style_enc_ckpt=None if sec is None else str(sec),
    )


def load_checkpoint(path: str | Path) -> DiffPoseTalkCheckpoint:
    """Load and verify a DiffPoseTalk denoiser checkpoint (`iter_*.pt`) without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass the iter_*.pt of a DiffPoseTalk model")
    data = _safe_torch_load(path)
    if not isinstance(data, dict) or "model" not in data or "args" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: not a DiffPoseTalk denoiser checkpoint (expected keys 'args', 'model', 'iter'; found {keys}). "
            "A style-encoder checkpoint (key 'encoder') cannot drive the face."
        )
    args = data["args"]
    if isinstance(args, argparse.Namespace):
        ns = vars(args)
    elif isinstance(args, dict):
        ns = args
    else:
        raise CheckpointError(f"{path}: 'args' is a {type(args).__name__}, expected an argparse.Namespace; "
                              f"{CHECKPOINT_FIX}")
    state = data["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors; {CHECKPOINT_FIX}")
    state = {str(k): v for k, v in state.items()}
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: tensor {k!r} contains NaN or infinite values; the file is damaged")
    try:
        model_args = resolve_args(ns, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}; {CHECKPOINT_FIX}") from None
    iteration = data.get("iter", 0)
    return DiffPoseTalkCheckpoint(model_args, state, int(iteration) if isinstance(iteration, int) else 0, path)


# ----------------------------------------------------------------------------------------------- numpy files
NUMPY_FIX = {
    "statistics": "use the stats_train.npz that belongs to the checkpoint",
    "style": "use a style feature .npy made by DiffPoseTalk's style encoder",
    "shape": "use a FLAME shape .npy of 100 coefficients (or an .npz with 'shape')",
}


def _np_load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file; check the path in the config or the command line")
    try:
        check_numpy_file(path)
    except SafeLoadError as exc:
        raise CheckpointError(f"{path}: {exc.reason}; {NUMPY_FIX[what]}") from None
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(f"{path}: the {what} file holds pickled objects, which are refused; "
                                  "save it with numpy.save / numpy.savez of plain float arrays") from None
        raise CheckpointError(f"{path}: not a readable numpy {what} file ({exc}); {NUMPY_FIX[what]}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable numpy {what} file ({type(exc).__name__}: {exc}); "
                              f"{NUMPY_FIX[what]}") from None


def _vector(arr: Any, path: Path, key: str, n: int, what: str, allow_rows: bool = False) -> NDArray[np.float32]:
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise CheckpointError(f"{path}: {what} {key!r} has dtype {a.dtype}, expected floats; "
                              f"{NUMPY_FIX.get(key, NUMPY_FIX['statistics'])}")
    if allow_rows and a.ndim == 2 and a.shape[0] >= 1:
        a = a[0]  # a per-frame sequence: the first frame, as upstream does
    if a.shape != (n,):
        raise CheckpointError(f"{path}: {what} {key!r} has shape {a.shape}, expected ({n},); "
                              f"{NUMPY_FIX.get(key, NUMPY_FIX['statistics'])}")
    out = a.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise CheckpointError(f"{path}: {what} {key!r} contains NaN or infinite values; the file is damaged")
    return out


def _array_from(path: Path, key: str, what: str) -> Any:
    data = _np_load(path, what)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if key not in data.files:
                raise CheckpointError(f"{path}: the .npz has no {key!r} array (found {data.files}); {NUMPY_FIX[what]}")
            return data[key]
    return data


def load_style(path: str | Path, d_style: int = 128) -> NDArray[np.float32]:
    """A style feature: `.npy` of shape (d_style,) (or an `.npz` with key 'style')."""
    p = Path(path)
    return _vector(_array_from(p, "style", "style"), p, "style", d_style, "style feature")


def load_shape(path: str | Path) -> NDArray[np.float32]:
    """FLAME shape coefficients: `.npy` (100,) or (T, 100) (first frame), or `.npz` with key 'shape'."""
    p = Path(path)
    return _vector(_array_from(p, "shape", "shape"), p, "shape", SHAPE_DIM, "shape coefficients", allow_rows=True)


STATS_SIZES = {"shape": SHAPE_DIM, "exp": N_EXP, "pose": 6}


def load_stats(path: str | Path) -> dict[str, NDArray[np.float32]]:
    """Coefficient statistics (`stats_train.npz`): {shape,exp,pose}_{mean,std}, checked for shape and sign."""
    p = Path(path)
    data = _np_load(p, "statistics")
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{p}: statistics must be an .npz with shape/exp/pose _mean/_std arrays; "
                              f"{NUMPY_FIX['statistics']}")
    out: dict[str, NDArray[np.float32]] = {}
    with data:
        for name, n in STATS_SIZES.items():
            for kind in ("mean", "std"):
                key = f"{name}_{kind}"
                if key not in data.files:
                    raise CheckpointError(f"{p}: missing {key!r} (found {sorted(data.files)}); use the stats_train.npz "
                                          "that belongs to the checkpoint")
                out[key] = _vector(data[key], p, key, n, "statistic")
    for name in STATS_SIZES:
        if np.any(out[f"{name}_std"] < 0):
            raise CheckpointError(f"{p}: {name}_std has negative entries; the file is not a statistics file")
    return out
