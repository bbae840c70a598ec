"""The training dataset reader on small real files (JPEG/PNG images, torch-saved tracker dicts): upstream's pairing
and split, its ground-truth compositing, and an error that names the frame, the file and the fix for each way a
dataset can be incomplete. Also the one-line note when LPIPS cannot be used."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drivers.avatar.flashavatar.train import dataset as ds
from drivers.avatar.flashavatar.train.synthetic import _frame_file, sequence

SIZE = 16


def _write(root: Path, n: int, offset: int = 1, tracking: Path | None = None) -> Path:
    """n tracked frames in upstream's layout with small random images."""
    rng = np.random.default_rng(0)
    tracking = tracking or root / "tracking" / "checkpoint"
    for sub in ("imgs", "alpha", "parsing"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    tracking.mkdir(parents=True, exist_ok=True)
    seq = sequence(n)
    view = np.eye(4)
    view[:3, :3] = np.diag([1.0, -1.0, -1.0])
    view[2, 3] = 1.0
    K = np.array([[600.0, 0, 256], [0, 600.0, 256], [0, 0, 1]])
    for i in range(n):
        stem = f"{i + offset:05d}"
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "imgs" / f"{stem}.jpg")
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE), dtype=np.uint8)).save(root / "alpha" / f"{stem}.jpg")
        for part in ("neckhead", "mouth"):
            mask = (rng.random((SIZE, SIZE)) > 0.5).astype(np.uint8) * 255
            Image.fromarray(mask).save(root / "parsing" / f"{stem}_{part}.png")
        torch.save(_frame_file(np.zeros(300, np.float32), seq, i, view, K), tracking / f"{i:05d}.frame")
    return root


def test_pairs_tracker_frames_with_the_next_image_and_loads_them(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", 6)
    frames = ds.list_frames(ds.find_layout(root))
    assert [f.index for f in frames] == list(range(6))
    assert [f.image.name for f in frames] == [f"{i + 1:05d}.jpg" for i in range(6)]
    tracking = ds.load_tracking(frames)
    assert tracking.cond.shape == (6, 120) and tracking.R.shape == (6, 3, 3) and tracking.shape.shape == (300,)
    data = ds.load_images(frames, (8, 8))  # resized to the training size
    assert data.shape == (6, 8, 8, 6) and data.dtype == torch.uint8


def test_ground_truth_is_upstreams_compositing() -> None:
    frame = torch.randint(0, 256, (5, 7, 6), dtype=torch.uint8)
    bg = torch.tensor([0.0, 1.0, 0.0])
    gt, head, mouth = ds.ground_truth(frame, bg)
    x = frame.float() / 255.0
    img, alpha, neckhead = x[..., :3], x[..., 3:4], x[..., 4:5]
    want = img * alpha + bg * (1 - alpha)
    want = want * neckhead + bg * (1 - neckhead)
    assert torch.allclose(gt, want, atol=1e-6)
    assert torch.allclose(head, neckhead) and torch.allclose(mouth, x[..., 5:6])


def test_split_follows_upstream() -> None:
    train, test = ds.split(2000)
    assert train == list(range(1500)) and test == list(range(1500, 2000))
    train, test = ds.split(12000)
    assert len(train) == 10000 and test == list(range(11500, 12000))
    train, test = ds.split(300)  # short clips hold out a tenth
    assert train == list(range(270)) and test == list(range(270, 300))
    with pytest.raises(ds.DatasetError, match="at least 2"):
        ds.split(1)
    with pytest.raises(ds.DatasetError, match="--test-frames"):
        ds.split(10, test_frames=10)


def test_finds_tracking_where_upstream_keeps_it(tmp_path: Path) -> None:
    root = tmp_path / "dataset" / "me"
    tracking = tmp_path / "metrical-tracker" / "output" / "me" / "checkpoint"
    _write(root, 3, tracking=tracking)
    assert ds.find_layout(root).tracking == tracking
    assert ds.find_layout(root, tracking.parent).tracking == tracking  # --tracking output/<id>


def test_missing_folder_and_tracking(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", 3)
    with pytest.raises(ds.DatasetError, match="does not exist"):
        ds.find_layout(tmp_path / "nothing")
    (root / "alpha").rename(root / "matte")
    with pytest.raises(ds.DatasetError, match=r"no alpha/ folder .*RobustVideoMatting"):
        ds.find_layout(root)
    (root / "matte").rename(root / "alpha")
    (root / "tracking").rename(root / "elsewhere")
    with pytest.raises(ds.DatasetError, match="--tracking"):
        ds.find_layout(root)


def test_missing_file_names_frame_file_and_fix(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", 5)
    (root / "alpha" / "00004.jpg").unlink()
    with pytest.raises(ds.DatasetError) as err:
        ds.list_frames(ds.find_layout(root))
    assert "frame 00003" in str(err.value) and "alpha/00004.jpg" in str(err.value)
    assert "RobustVideoMatting" in str(err.value)
    (root / "imgs" / "00002.jpg").unlink()
    with pytest.raises(ds.DatasetError, match=r"tracker frame 00001 has no video frame .*00002"):
        ds.list_frames(ds.find_layout(root))


def test_offset_mismatch_suggests_the_other_offset(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", 4, offset=0)  # images numbered like the tracker's frames
    with pytest.raises(ds.DatasetError, match="--frame-offset 0"):
        ds.list_frames(ds.find_layout(root))
    assert len(ds.list_frames(ds.find_layout(root, frame_offset=0))) == 4


def test_tracker_gap_is_left_out_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _write(tmp_path / "d", 6)
    (root / "tracking" / "checkpoint" / "00004.frame").unlink()
    with caplog.at_level(logging.WARNING):
        frames = ds.list_frames(ds.find_layout(root))
    assert [f.index for f in frames] == [0, 1, 2, 3, 5]
    assert "00004" in caplog.text


def test_bad_files_name_the_frame(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", 4)
    layout = ds.find_layout(root)
    Image.fromarray(np.zeros((SIZE + 2, SIZE, 3), np.uint8)).save(root / "parsing" / "00003_mouth.png")
    frames = ds.list_frames(layout)
    with pytest.raises(ds.DatasetError, match=r"frame 00002: .*00003_mouth.png is 16x18 but the video frames are 16x16"):
        ds.load_images(frames, (SIZE, SIZE))
    (root / "imgs" / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ds.DatasetError, match=r"frame 00001: .*00002.jpg cannot be read as an image"):
        ds.load_images(frames, (SIZE, SIZE))
    tracking = root / "tracking" / "checkpoint"
    (tracking / "00001.frame").write_bytes(b"garbage")
    with pytest.raises(ds.DatasetError, match=r"frame 00001: .*00001\.frame"):
        ds.load_tracking(frames)
    data = torch.load(tracking / "00000.frame", weights_only=False)
    del data["flame"]["eyelids"]
    torch.save(data, tracking / "00001.frame")
    with pytest.raises(ds.DatasetError, match=r"00001.frame lacks flame.eyelids"):
        ds.load_tracking(frames)


def test_lpips_unavailable_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.avatar.flashavatar.train.losses import VGG16_FILE, Perceptual

    monkeypatch.setitem(sys.modules, "lpips", None)  # not installed
    module, note = Perceptual.load(torch.device("cpu"))
    assert module is None and "pip install lpips" in note and "\n" not in note

    class NoNetwork:  # the lpips package is there, its VGG16 backbone cannot be downloaded
        class LPIPS:
            def __init__(self, **kwargs: object) -> None:
                raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setitem(sys.modules, "lpips", NoNetwork)
    module, note = Perceptual.load(torch.device("cpu"))
    assert module is None and VGG16_FILE in note and "checkpoints" in note and "\n" not in note


def _many(root: Path, real: Path, n: int) -> Path:
    """An n-frame dataset whose files are links to `real`'s frame 0 (a long video without the disk it takes)."""
    for sub in ("imgs", "alpha", "parsing", "tracking/checkpoint"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        stem = f"{i + 1:05d}"
        (root / "imgs" / f"{stem}.jpg").symlink_to(real / "imgs" / "00001.jpg")
        (root / "alpha" / f"{stem}.jpg").symlink_to(real / "alpha" / "00001.jpg")
        for part in ("neckhead", "mouth"):
            (root / "parsing" / f"{stem}_{part}.png").symlink_to(real / "parsing" / f"00001_{part}.png")
        (root / "tracking" / "checkpoint" / f"{i:05d}.frame").symlink_to(real / "tracking" / "checkpoint" / "00000.frame")
    return root


def test_each_loading_stage_reports_before_its_first_file(tmp_path: Path) -> None:
    from drivers.avatar.flashavatar.train.progress import LoadProgress

    real = _write(tmp_path / "real", 1)
    root = _many(tmp_path / "long", real, 300)
    said: list[str] = []
    progress = LoadProgress(said.append, every=0.0)
    frames = ds.list_frames(ds.find_layout(root), progress)
    assert said[:2] == [f"finding the tracked frames in {root / 'tracking' / 'checkpoint'}", "checking frame files: 0/300"]
    assert said[-1].startswith("checking frame files: 300/300 in ")
    said.clear()
    assert ds.load_tracking(frames, progress).cond.shape == (300, 120)
    counts = [int(line.split(": ")[1].split("/")[0]) for line in said]
    assert counts[0] == 0 and counts[-1] == 300 and counts == sorted(counts) and len(counts) > 2

    said.clear()
    (root / "tracking" / "checkpoint" / "00000.frame").unlink()
    (root / "tracking" / "checkpoint" / "00000.frame").write_bytes(b"garbage")  # the very first file fails
    with pytest.raises(ds.DatasetError, match="frame 00000"):
        ds.load_tracking(frames, progress)
    assert said[0] == "reading tracker frames: 0/300"  # said before the first file was opened


def test_a_20000_frame_dataset_speaks_before_it_loads(tmp_path: Path) -> None:
    """At the command line without bars: the frame count and each stage's start are printed before the tracker
    files are read (the run here ends at its first, damaged, tracker file)."""
    import subprocess

    from tests.golden_files import golden_dir, require

    require("flashavatar", "flame_synthetic.pkl", "FLAME_masks_synthetic.pkl", "FlameMesh.obj", "l_eyelid.npy")
    golden = golden_dir("flashavatar")
    real = _write(tmp_path / "real", 1)
    root = _many(tmp_path / "long", real, 20_000)
    (root / "tracking" / "checkpoint" / "00000.frame").unlink()
    (root / "tracking" / "checkpoint" / "00000.frame").write_bytes(b"garbage")
    run = subprocess.run([sys.executable, "-m", "bridge.cli", "avatar", "train", str(root), "--out", str(tmp_path / "o"),
                          "--flame-model", str(golden / "flame_synthetic.pkl"), "--flame-masks",
                          str(golden / "FLAME_masks_synthetic.pkl"), "--flame-mesh", str(golden / "FlameMesh.obj"),
                          "--eyelids-dir", str(golden), "--device", "cpu", "--no-progress"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[3])
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[:2] == [f"finding the tracked frames in {root / 'tracking' / 'checkpoint'}",
                         "checking frame files: 0/20000"], lines[:5]
    assert any(line.startswith("checking frame files: 20000/20000 in ") for line in lines), lines
    assert lines[-1] == "reading tracker frames: 0/20000", lines[-3:]
    assert "frame 00000" in run.stderr and "Traceback" not in run.stderr
