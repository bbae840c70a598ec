"""FlashAvatar checkpoints: upstream's `chkpnt*.pth`, read without running code and checked shape by shape.

The file is a tuple `((mlp_state, mlp_adam), gaussian_tuple, iteration)` as written by upstream's train.py,
loaded through `drivers.safe_load.load_torch` (weights only); the optimizer state is dropped.
"""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bridge.core.errors import UserError
from drivers.safe_load import RefusedContent, SafeLoadError, load_torch

N_FREQS = 8
PE_DIM = 3 * (1 + 2 * N_FREQS)  # 51
COND_DIM = 120  # expr 100, jaw 6, eyes 12, eyelids 2
GAUSSIAN_TUPLE_LEN = 12


class CheckpointError(UserError, ValueError):
    """The checkpoint is missing, damaged, unsafe or not a FlashAvatar checkpoint; the text says what to do."""


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


def read_checkpoint_file(path: Path | str) -> Any:
    """The checkpoint file's objects, loaded safely (tensors and plain containers only), not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; set avatar.checkpoint to FlashAvatar's chkpnt*.pth")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch checkpoint (not a zip archive; truncated or another format); "
                              "copy the chkpnt*.pth again from the training machine")
    try:
        return load_torch(path)
    except RefusedContent as exc:
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain containers ({exc.reason}); "
            "FlashAvatar checkpoints never do, so this file is not one (or has been tampered with)"
        ) from None
    except SafeLoadError as exc:
        raise CheckpointError(
            f"{path} is damaged, truncated or not a torch checkpoint ({exc.reason}); "
            "copy the chkpnt*.pth again from the training machine"
        ) from None


def _shape(t: Any, name: str, want: tuple[int | None, ...], path: Path) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"{path}: {name} should be a tensor, found {type(t).__name__}; not a FlashAvatar checkpoint")
    if t.dim() != len(want) or any(w is not None and s != w for s, w in zip(t.shape, want)):
        shown = tuple("N" if w is None else w for w in want)
        raise CheckpointError(f"{path}: {name} has shape {tuple(t.shape)}, expected {shown}; the file is damaged or "
                              "not FlashAvatar's: copy the chkpnt*.pth again from the training machine")
    if not torch.isfinite(t).all():
        raise CheckpointError(f"{path}: {name} contains NaN or infinite values; the training run diverged")
    return t.detach().float()


def load_checkpoint(path: Path | str) -> FlashAvatarCheckpoint:
    """Read an upstream `chkpnt*.pth` safely and validate every shape."""
    return parse_checkpoint(read_checkpoint_file(path), Path(path))


def parse_checkpoint(obj: Any, path: Path) -> FlashAvatarCheckpoint:
    """Validate what `read_checkpoint_file(path)` returned: upstream's tuple with every shape checked."""
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


