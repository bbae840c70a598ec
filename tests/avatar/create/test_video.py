"""Decoding a phone video: rotation tags honoured, variable frame rates resampled to 25 fps by timestamp, damaged
files refused with one line saying what to do. Real H.264 files made by PyAV."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from drivers.avatar.flashavatar.create.video import FPS, VideoError, frames, probe
from tests.avatar.create.clips import tag_rotation, write_clip


def _marked(i: int) -> np.ndarray:
    """64x32 frame whose top-left quarter is bright (to see the rotation) and whose brightness counts frames."""
    img = np.full((32, 64, 3), (i * 4) % 200 + 20, np.uint8)
    img[:8, :16] = 255
    return img


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("v") / "clip.mp4", 25, _marked)


@pytest.mark.parametrize(("clockwise", "corner"), [(90, (0, -1)), (-90, (-1, 0)), (180, (-1, -1))])
def test_rotation_tag_turns_the_frames_upright(clip: Path, tmp_path: Path, clockwise: int,
                                               corner: tuple[int, int]) -> None:
    path = tag_rotation(Path(shutil.copy(clip, tmp_path / "r.mp4")), clockwise)
    info = probe(path)
    assert info.rotation == -clockwise
    assert (info.width, info.height) == ((32, 64) if clockwise % 180 else (64, 32))
    first = next(frames(info)).rgb
    assert first.shape[:2] == (info.height, info.width)
    # the bright corner moves where a player shows it: clockwise 90 puts the top-left at the top-right
    r, c = corner
    rows = slice(0, 6) if r == 0 else slice(-6, None)
    cols = slice(0, 6) if c == 0 else slice(-6, None)
    assert first[rows, cols].mean() > 230
    assert first[:6, :6].mean() < 200 or corner == (0, 0)


def test_constant_rate_keeps_every_frame(clip: Path) -> None:
    info = probe(clip)
    got = list(frames(info))
    assert [f.index for f in got] == list(range(25))
    assert np.allclose([f.time_s for f in got], np.arange(25) / FPS, atol=1e-3)


def test_variable_rate_is_resampled_by_timestamps(tmp_path: Path) -> None:
    # 40 frames at irregular gaps of 20, 40 or 100 ms (2.04 s): 25 fps output picks the nearest source frame
    gaps = [20, 40, 100, 40, 20] * 8
    times = np.concatenate([[0], np.cumsum(gaps[:-1])]).astype(int).tolist()
    path = write_clip(tmp_path / "vfr.mp4", len(times), _marked, times_ms=times)
    got = list(frames(probe(path)))
    total_s = (times[-1] + gaps[-1]) / 1000
    assert abs(len(got) - total_s * FPS) <= 1
    src = np.array(times) / 1000
    for f in got:
        nearest = np.min(np.abs(src - f.index / FPS))
        assert abs(f.time_s - f.index / FPS) <= nearest + 1e-6, f.index  # the nearest source frame (or a tie)
        assert np.min(np.abs(src - f.time_s)) < 1e-6
    # every source frame's brightness is its number: the output follows the source's real time
    level = np.array([f.rgb[20:, 20:].mean() for f in got])
    assert np.all(np.diff(level) >= -2)


def test_damaged_and_cut_files_are_refused_with_the_fix(clip: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # moov atom (at the end) lost
    with pytest.raises(VideoError, match="damaged or was cut short"):
        probe(cut)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    with pytest.raises(VideoError, match="copy it from the phone again"):
        probe(junk)
    with pytest.raises(VideoError, match="does not exist"):
        probe(tmp_path / "missing.mp4")
