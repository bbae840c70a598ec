"""ARKit blendshape name → FaceParams delta maps, one per avatar kind, read from presets TOML.

A map file has an optional ``[channels]`` table naming expression indices, and one ``[map.<arkitName>]``
table per blendshape whose keys are FaceParams groups (expression, jaw, eyes, eyelids, neck, head,
translation). A group's value is either a full list, or a table of index (or channel name) → value, e.g.
``expression = { smile = 0.5 }`` or ``eyes = { "1" = 0.35 }`` (eyes are flattened: left xyz, right xyz).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.controls import ARKIT_NAMES, arkit_name
from bridge.face_params import FaceParams

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

F32 = NDArray[np.float32]
VEC = FaceParams.VECTOR_SIZE
PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


class MapError(ValueError):
    """A problem in a map or preset file, naming the file, the entry and the fix."""


def group_delta(groups: dict[str, Any], channels: dict[str, int], where: str) -> F32:
    """A 120-vector from ``{group: list | {index|channel: value}}``."""
    out = np.zeros(VEC, np.float32)
    for group, value in groups.items():
        if group not in FaceParams.LAYOUT:
            raise MapError(f"{where}: unknown group {group!r}; use one of {sorted(FaceParams.LAYOUT)}")
        start, n = FaceParams.LAYOUT[group]
        if isinstance(value, list):
            flat = np.asarray(value, dtype=np.float64).reshape(-1)
            if flat.shape[0] > n:
                raise MapError(f"{where}: {group} takes at most {n} values, got {flat.shape[0]}")
            out[start : start + flat.shape[0]] += flat.astype(np.float32)
        elif isinstance(value, dict):
            for key, v in value.items():
                if key.lstrip("-").isdigit():
                    idx = int(key)
                elif group == "expression" and key in channels:
                    idx = channels[key]
                else:
                    raise MapError(f"{where}: {group} key {key!r} is neither an index nor a channel name "
                                   f"(channels: {sorted(channels)})")
                if not 0 <= idx < n:
                    raise MapError(f"{where}: {group} index {idx} outside 0..{n - 1}")
                if not isinstance(v, (int, float)):
                    raise MapError(f"{where}: {group}[{key}] = {v!r} is not a number")
                out[start + idx] += float(v)
        else:
            raise MapError(f"{where}: {group} must be a list or a table, got {type(value).__name__}")
    if not np.all(np.isfinite(out)):
        raise MapError(f"{where}: values must be finite")
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MapError(f"{path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MapError(f"{path} is not valid TOML: {exc}; fix the syntax there") from None


@dataclass
class ArkitMap:
    """Deltas of the 52 ARKit blendshapes for one avatar (missing names map to nothing)."""

    name: str
    deltas: dict[str, F32] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def delta(self, arkit: str) -> F32:
        d = self.deltas.get(arkit)
        return d if d is not None else np.zeros(VEC, np.float32)

    def combine(self, weights: dict[str, float]) -> F32:
        """Sum of weight × delta over ARKit names."""
        out = np.zeros(VEC, np.float32)
        for n, w in weights.items():
            d = self.deltas.get(n)
            if d is not None:
                out += np.float32(w) * d
        return out

    def matrix(self) -> F32:
        """(52, 120) in ARKIT_NAMES order."""
        return np.stack([self.delta(n) for n in ARKIT_NAMES])

    def overlay(self, path: Path) -> None:
        """Replace entries with those of another map file (a calibration result)."""
        other = load_map(path)
        self.deltas.update(other.deltas)
        self.channels.update(other.channels)
        self.sources.append(str(path))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sources": self.sources, "channels": self.channels,
                "mapped": sorted(self.deltas)}


def load_map(path: Path) -> ArkitMap:
    data = read_toml(path)
    channels_raw = data.get("channels", {})
    if not isinstance(channels_raw, dict) or not all(isinstance(v, int) for v in channels_raw.values()):
        raise MapError(f"{path}: [channels] must map names to expression indices (integers)")
    channels = {str(k): int(v) for k, v in channels_raw.items()}
    table = data.get("map", {})
    if not isinstance(table, dict):
        raise MapError(f"{path}: [map] must be a table of ARKit names")
    amap = ArkitMap(name=str(data.get("meta", {}).get("avatar", path.stem)), channels=channels, sources=[str(path)])
    for key, groups in table.items():
        canonical = arkit_name(key)
        if canonical is None:
            raise MapError(f"{path}: [map.{key}] is not an ARKit blendshape name (see docs/controls.md)")
        if not isinstance(groups, dict):
            raise MapError(f"{path}: [map.{key}] must be a table of groups")
        amap.deltas[canonical] = group_delta(groups, channels, f"{path} [map.{key}]")
    return amap


def map_file_for(avatar_name: str, presets_dir: Path | None = None) -> Path:
    base = presets_dir or PRESETS_DIR
    own = base / f"arkit_{avatar_name}.toml"
    if own.is_file():
        return own
    if avatar_name == "demo":
        return PRESETS_DIR / "arkit_demo.toml" if not (base / "arkit_demo.toml").is_file() else base / "arkit_demo.toml"
    flame = base / "arkit_flame.toml"
    return flame if flame.is_file() else PRESETS_DIR / "arkit_flame.toml"


def calibration_file(avatar_name: str, presets_dir: Path | None = None) -> Path:
    """Where `avatar-bridge calibrate` writes the fitted expression entries of a FLAME avatar."""
    return (presets_dir or PRESETS_DIR) / "calibrated" / f"arkit_{avatar_name}.toml"


def load_for_avatar(avatar_name: str, presets_dir: Path | None = None) -> ArkitMap:
    """The map for `avatar_name` ("demo", "flashavatar" or a named FLAME avatar): the avatar's own file if
    present, else the demo or generic FLAME map, overlaid with a calibration result when one exists."""
    amap = load_map(map_file_for(avatar_name, presets_dir))
    calib = calibration_file(avatar_name, presets_dir)
    if avatar_name != "demo" and calib.is_file():
        amap.overlay(calib)
    return amap
