"""`avatar-bridge avatar torso` on a recorded person with a known answer (tests/avatar/scene/person.py): the
plate is the shirt and the lowest part of the neck of the neutral frame, shoulders beyond the crop included,
with the neck line where the shirt covers the neck; and what cannot be used is a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.cli import run
from drivers.avatar.scene.torso import TorsoError, TorsoPlate
from tests.avatar.scene import person


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("person")
    person.write_video(root / "talk.mp4")
    person.write_dataset(root / "dataset")
    return root / "dataset", root / "talk.mp4"


def test_plate_is_the_body_below_the_neck_of_the_neutral_frame(recorded: tuple[Path, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    dataset, video = recorded
    out = tmp_path / "torso.npz"
    assert run(["avatar", "torso", str(dataset), "--video", str(video), "--out", str(out)]) == 0
    assert f"{person.NEUTRAL + 1:05d}.png" in capsys.readouterr().out  # the neutral frame was chosen
    plate = TorsoPlate.load(out)
    h, w = plate.rgba.shape[:2]
    alpha = plate.rgba[..., 3]
    # The neck line: the shirt's collar at the neck's centre, in the video's pixels (the mask's last neck row).
    assert abs(plate.neck_width - (person.NECK_X1 - person.NECK_X0)) <= 2
    # Where the plate sits in the video: its anchor is the collar's centre.
    ax, ay = plate.anchor
    top = person.BODY_TOP - 1 - ay  # the video row of the plate's first row
    left = 160 - ax
    assert abs(left - round(left)) < 1 and abs(top - round(top)) < 1
    top, left = round(top), round(left)
    head, neck, body = person.masks(person.NEUTRAL)
    expected = np.zeros((person.H, person.W), bool)
    expected[top : top + h, left : left + w] = True
    # Every shirt pixel is in the plate, shoulders outside the crop's columns too, nearly opaque ...
    shirt = body & expected
    assert shirt.sum() > 0.95 * body.sum()
    placed = np.zeros((person.H, person.W), np.uint8)
    placed[top : top + h, left : left + w] = alpha
    assert np.mean(placed[body] > 240) > 0.97
    assert (body & (placed > 240))[:, : int(person.CROP[0])].sum() > 200  # left of the crop box
    # ... the head is not, nor the wall; a band of neck just above the collar is kept (the rendered neck covers it).
    assert placed[head].max() == 0
    wall = ~(head | neck | body)
    assert np.mean(placed[wall] > 16) < 0.01
    assert placed[person.BODY_TOP - 4, 160] > 240 and placed[person.NECK_TOP + 5, 160] == 0
    # Premultiplied colour: the shirt's colour where opaque.
    colour = np.zeros((person.H, person.W, 3), np.uint8)
    colour[top : top + h, left : left + w] = plate.rgba[..., :3]
    deep = body & (placed == 255)
    assert np.abs(colour[deep].astype(int) - np.array(person.SHIRT)).mean() < 8


def test_bad_inputs_are_one_line_errors(recorded: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    dataset, video = recorded
    out = tmp_path / "torso.npz"
    (tmp_path / "crops_missing").mkdir()
    with pytest.raises(TorsoError, match="crops.csv"):
        from drivers.avatar.scene.torso_source import read_crops

        read_crops(tmp_path / "crops_missing" / "crops.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("image,source_time_s,x0,y0,x1,y1\n00001.png,zero,1,2,3,4\n")
    with pytest.raises(TorsoError, match="line 2"):
        read_crops(bad)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    assert run(["avatar", "torso", str(dataset), "--video", str(not_video), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    assert run(["avatar", "torso", str(tmp_path), "--video", str(video), "--out", str(out)]) == 2
    assert "imgs/" in capsys.readouterr().err
    (tmp_path / "plate.npz").write_bytes(b"PK\x03\x04 nonsense")
    with pytest.raises(TorsoError, match="cannot be read|not a torso plate"):
        TorsoPlate.load(tmp_path / "plate.npz")
