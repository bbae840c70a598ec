"""ARKit blendshape name → FaceParams delta maps, one per avatar kind, read from presets TOML.

A map file has an optional ``[channels]`` table naming expression indices, and one ``[map.<arkitName>]``
table per blendshape whose keys are FaceParams groups (expression, jaw, eyes, eyelids, neck, head,
translation). A group's value is either a full list, or a table of index (or channel name) → value, e.g.
``expression = { smile = 0.5 }`` or ``eyes = { "1" = 0.35 }`` (eyes are flattened: left xyz, right xyz).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.controls.presets import MapError, Preset, group_delta, presets_dir, read_toml, user_presets_dir
from bridge.controls.vocabulary import arkit_name
from bridge.core.face_params import FaceParams

F32 = NDArray[np.float32]
VEC = FaceParams.VECTOR_SIZE


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

    def vector(self, preset: Preset) -> F32:
        """A preset's FaceParams delta on this avatar: its ARKit weights through the map, plus its raw part."""
        return self.combine(preset.arkit) + preset.raw

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


def map_file_for(avatar_name: str, folder: Path | None = None) -> Path:
    """The avatar's map: its own file in `folder` (`presets.dir`, else the user's presets folder), else the
    demo or generic FLAME map there, else the shipped one."""
    shipped = presets_dir()
    base = folder or user_presets_dir()
    own = base / f"arkit_{avatar_name}.toml"
    if own.is_file():
        return own
    if avatar_name == "demo":
        return shipped / "arkit_demo.toml" if not (base / "arkit_demo.toml").is_file() else base / "arkit_demo.toml"
    flame = base / "arkit_flame.toml"
    return flame if flame.is_file() else shipped / "arkit_flame.toml"


def calibration_file(avatar_name: str, folder: Path | None = None) -> Path:
    """Where `avatar-bridge calibrate` writes the fitted expression entries of a FLAME avatar (the user's presets
    folder unless `presets.dir` says otherwise: never the installation)."""
    return (folder or user_presets_dir()) / "calibrated" / f"arkit_{avatar_name}.toml"


def load_for_avatar(avatar_name: str, folder: Path | None = None) -> ArkitMap:
    """The map for `avatar_name` ("demo", "flashavatar" or a named FLAME avatar): the avatar's own file if
    present, else the demo or generic FLAME map, overlaid with a calibration result when one exists."""
    amap = load_map(map_file_for(avatar_name, folder))
    calib = calibration_file(avatar_name, folder)
    if avatar_name != "demo" and calib.is_file():
        amap.overlay(calib)
    return amap
