"""What the user makes lives in the user's presets folder, not in the installation (a wheel's site-packages
may be read-only and is replaced on upgrade): captures, learned MIDI maps and calibrations are written there,
and its files are read before and in addition to the shipped ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bridge.controls.arkit_maps import calibration_file, map_file_for
from bridge.controls.presets import PresetLibrary, presets_dir, user_presets_dir
from bridge.core.face_params import FaceParams


def test_the_user_folder_is_per_user_and_outside_the_installation() -> None:
    folder = user_presets_dir()
    assert folder == Path(os.environ["XDG_DATA_HOME"]) / "avatar-bridge" / "presets"  # tests/conftest.py sets it
    assert presets_dir() not in folder.parents and folder != presets_dir()
    assert calibration_file("me") == folder / "calibrated" / "arkit_me.toml"
    from drivers.control.midi import DEFAULT_MAP

    assert folder / "midi" / "learned.toml" == DEFAULT_MAP


def test_user_presets_come_first_and_add_to_the_shipped_ones(tmp_path: Path) -> None:
    shipped = PresetLibrary(tmp_path / "empty")
    assert shipped.names("preset") and shipped.names("emotion")  # nothing of the user's yet: the shipped ones
    mine = tmp_path / "mine"
    mine.mkdir()
    name = shipped.names("preset")[0]
    (mine / "expressions.toml").write_text(f"[{name}]\nbrowInnerUp = 0.25\n[my_own]\njawOpen = 0.5\n")
    lib = PresetLibrary(mine)
    assert set(lib.names("preset")) == {*shipped.names("preset"), "my_own"}  # in addition to the shipped ones
    overridden = lib.get("preset", name)
    assert overridden is not None and overridden.arkit == {"browInnerUp": 0.25}  # the user's wins
    assert lib.names("emotion") == shipped.names("emotion")
    assert map_file_for("demo", mine) == presets_dir() / "arkit_demo.toml"  # no map of the user's: the shipped


def test_a_capture_is_written_to_the_user_folder() -> None:
    lib = PresetLibrary()
    assert lib.directory == user_presets_dir()
    delta = np.zeros(FaceParams.VECTOR_SIZE, np.float32)
    delta[FaceParams.LAYOUT["jaw"][0]] = 0.2
    path = lib.capture("smirk", delta)
    assert path == user_presets_dir() / "captured.toml" and "smirk" in lib.names("preset")
    assert not (presets_dir() / "captured.toml").exists()
