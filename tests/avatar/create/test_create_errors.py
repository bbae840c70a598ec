"""What a user's video can get wrong, each refused (or warned about) in one line with the fix, before the long
stages: no face, too dark, blurred, turned without its rotation tag, damaged, too short, not enough disk, and a
face lost for a stretch (those frames dropped and named). Real encoded clips through `avatar prepare`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.cli import main
from drivers.avatar.flashavatar.create.prepare import LOST_STRETCH_S, PrepareOptions, Preparer, kept_frames
from drivers.avatar.flashavatar.create.video import FPS
from tests.avatar.create.clips import moving_face, write_clip
from tests.golden_files import golden_dir, require

FRAMES = 20


def _blur(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), 4)


def _flame_opts() -> list[str]:
    require("flashavatar", "flame_synthetic.pkl", "FLAME_masks_synthetic.pkl", "FlameMesh.obj", "l_eyelid.npy")
    g = golden_dir("flashavatar")
    return ["--flame-model", str(g / "flame_synthetic.pkl"), "--flame-masks", str(g / "FLAME_masks_synthetic.pkl"),
            "--flame-mesh", str(g / "FlameMesh.obj"), "--eyelids-dir", str(g)]


CASES: dict[str, tuple[Callable[[int], np.ndarray], str]] = {
    "no face": (lambda i: np.full((480, 640, 3), 90 + i, np.uint8), "no face found in .*: film your face"),
    "dark": (lambda i: (moving_face(i) * 0.15).astype(np.uint8), "too dark .*facing a window or a lamp"),
    "blurred": (lambda i: _blur(moving_face(i)), "too blurred .*in focus"),
    "turned": (lambda i: np.ascontiguousarray(np.rot90(moving_face(i))), "looks rotated.*90° clockwise"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_footage_is_one_line_with_the_fix(case: str, tmp_path: Path, capsys: Any) -> None:
    make, message = CASES[case]
    clip = write_clip(tmp_path / "clip.mp4", FRAMES, make)
    out = tmp_path / "ds"
    assert main(["avatar", "prepare", str(clip), "--out", str(out), *_flame_opts(), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("avatar-bridge: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not (out / "imgs").exists()  # refused before the frames were cropped


def test_damaged_file_is_refused(tmp_path: Path, capsys: Any) -> None:
    clip = write_clip(tmp_path / "clip.mp4", FRAMES)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:2000])
    assert main(["avatar", "prepare", str(cut), "--out", str(tmp_path / "ds"), *_flame_opts()]) == 2
    assert "damaged or was cut short" in capsys.readouterr().err


def test_short_video_warns_with_the_minimum_and_goes_on(tmp_path: Path) -> None:
    said: list[str] = []
    clip = write_clip(tmp_path / "clip.mp4", FRAMES)
    prep = Preparer(clip, tmp_path / "ds", PrepareOptions(files=None, log=said.append))  # type: ignore[arg-type]
    info = prep.stage_probe()
    assert info.frames == FRAMES
    assert any("warning:" in s and "20 s or more" in s for s in said)


def test_not_enough_disk_is_known_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(tmp_path / "clip.mp4", FRAMES)
    real = shutil.disk_usage

    def tiny(path: Any) -> Any:
        u = real(path)
        return type(u)(u.total, u.total - 1000, 1000)  # a full disk

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    prep = Preparer(clip, tmp_path / "ds", PrepareOptions(files=None, log=lambda s: None))  # type: ignore[arg-type]
    from bridge.core.errors import UserError

    with pytest.raises(UserError, match="not enough disk space .* free some space or give --out on another disk"):
        prep.stage_probe()


def test_a_face_lost_for_a_stretch_is_dropped_and_short_gaps_are_bridged() -> None:
    valid = np.ones(100, bool)
    valid[10:13] = False  # 0.12 s: bridged
    long = int(LOST_STRETCH_S * FPS) + 5
    valid[40:40 + long] = False  # a stretch: dropped
    kept = kept_frames(valid)
    assert kept[10:13].all() and not kept[40:40 + long].any() and kept[40 + long:].all()
