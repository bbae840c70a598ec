"""A short generated clip through `avatar create` on the CPU: prepare (frames, landmarks, masks, FLAME tracking,
report) → a few training iterations → the avatar loads through its avatar.toml and renders, preview.mp4
shows video and avatar side by side, and style.npy (the style encoder over the tracked motion) is referenced.

The clip is the ground-truth test video (a textured FLAME head turning, talking and looking around, rendered by
`synthetic_video` with the stand-in FLAME of `synthetic_flame`), so crops.csv can be checked against where the
head really was. It loses the face for half a second: those frames get no tracking and the report names them.
The dataset is upstream's layout, read by the trainer's own reader, and a second run skips every complete stage
while a damaged stage is redone.

Tiny on purpose (40 frames at 256², 64² training, a 2 x 32 MLP started at zero as
tests/avatar/flashavatar/test_train.py does); the full-size run is bench/bench_create.py.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bridge.cli import main
from tests.golden_files import golden_dir, require

FRAMES = 40
SIZE = 256
NOSE_TIP = 3564  # FLAME vertex; mediapipe's face-mesh point 4 is the nose tip too
GONE = range(20, 34)  # 0.56 s without a face (someone walks past the camera): dropped from training
TINY = ["--iterations", "4", "--size", "64", "--mlp-width", "32", "--mlp-layers", "2", "--mlp-init", "zero",
        "--no-lpips", "--preview-frames", "4", "--no-progress", "--device", "cpu"]
STYLE = Path(__file__).resolve().parents[2] / "data" / "golden_style"


def _flame_opts(tmp: Path) -> list[str]:
    """The stand-in FLAME (saved as an .npz, which --flame-model reads) with the test FLAME files."""
    require("flashavatar", "FLAME_masks_synthetic.pkl", "FlameMesh.obj", "l_eyelid.npy", "r_eyelid.npy")
    g = golden_dir("flashavatar")
    model = tmp / "flame_standin.npz"
    if not model.is_file():
        from drivers.avatar.flashavatar.create.synthetic_flame import build_synthetic_flame

        np.savez(model, **build_synthetic_flame(g / "FlameMesh.obj"))
    return ["--flame-model", str(model), "--flame-masks", str(g / "FLAME_masks_synthetic.pkl"),
            "--flame-mesh", str(g / "FlameMesh.obj"), "--eyelids-dir", str(g)]


def _clip(tmp: Path, flame_npz: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """The ground-truth video with the face gone in GONE; returns the file and its truth."""
    from drivers.avatar.flame.files import load_eyelids
    from drivers.avatar.flame.model import FlameModel
    from drivers.avatar.flashavatar.create.synthetic_video import (
        BACKGROUND,
        astronaut_texture,
        make_video,
        write_video,
    )

    arrays = dict(np.load(flame_npz))
    flame = FlameModel(arrays, *load_eyelids(golden_dir("flashavatar")))
    video = make_video(flame, astronaut_texture(arrays["v_template"], arrays["f"]), FRAMES, SIZE)
    for i in GONE:
        video.frames[i] = np.broadcast_to(BACKGROUND.astype(np.uint8), video.frames[i].shape).copy()
    write_video(video, tmp / "clip.mp4")
    return tmp / "clip.mp4", video.truth


@pytest.fixture(scope="module")
def created(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("create")
    os.environ["AVATAR_BRIDGE_CACHE"] = str(tmp / "cache")
    flame = _flame_opts(tmp)
    clip, truth = _clip(tmp, Path(flame[1]))
    out = tmp / "me"
    try:
        rc = main(["avatar", "create", str(clip), "--out", str(out), *flame, *TINY,
                   "--style-checkpoint", str(STYLE / "se_nohead.pt"), "--style-stats", str(STYLE / "stats.npz")])
    finally:
        torch.set_num_threads(before)
    return {"rc": rc, "out": out, "clip": clip, "tmp": tmp, "truth": truth}


def test_create_makes_a_dataset_in_upstreams_layout(created: dict[str, Any]) -> None:
    from drivers.avatar.flashavatar.train import dataset as ds

    assert created["rc"] == 0
    data = created["out"] / "dataset"
    for sub, pattern in (("imgs", "*.jpg"), ("alpha", "*.jpg"), ("parsing", "*_neckhead.png"),
                         ("parsing", "*_mouth.png")):
        assert len(list((data / sub).glob(pattern))) == FRAMES, sub
    layout = ds.find_layout(data)
    frames = ds.list_frames(layout)  # the trainer's own reader: tracker frame m <-> image m + 1
    images = [int(f.image.stem) for f in frames]
    assert images == [i for i in range(1, FRAMES) if i not in GONE]  # the face-less stretch has no .frame
    tracking = ds.load_tracking(frames)
    assert tracking.cond.shape == (len(images), 120) and torch.isfinite(tracking.cond).all()
    with open(data / "crops.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == FRAMES and list(rows[0]) == ["image", "source_time_s", "x0", "y0", "x1", "y1"]
    assert [int(r["image"]) for r in rows] == list(range(FRAMES))
    assert abs(float(rows[10]["source_time_s"]) - 0.4) < 1e-3
    box = np.array([[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in rows])
    assert np.allclose(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1], atol=0.02)  # square
    # crops.csv maps the crop back to the video: the true nose tip lands on the detected one
    with np.load(data / ".work" / "landmarks.npz") as z:
        points = z["points"]
    seen = [i for i in range(FRAMES) if i not in GONE]
    nose = np.asarray(created["truth"]["vertices_px"])[seen, NOSE_TIP]
    in_crop = (nose - box[seen, :2]) * 512 / (box[seen, 2:3] - box[seen, 0:1])
    assert np.median(np.linalg.norm(in_crop - points[seen, 4], axis=1)) < 12


def test_the_photometric_refinement_brings_the_tracking_nearer_the_truth(created: dict[str, Any]) -> None:
    """prepare refines the landmark fit against the pixels: the head's rotation and the face's vertices (mapped
    back to the video through crops.csv) come nearer the truth than the landmark fit alone put them."""
    from drivers.avatar.flame.model import FlameModel
    from drivers.avatar.flashavatar.create.prepare import load_tracking
    from drivers.avatar.flashavatar.create.synthetic_flame import LEFT_EYEBALL
    from drivers.avatar.flashavatar.create.synthetic_video import rotation_error_deg

    data = created["out"] / "dataset"
    fitted = load_tracking(data / ".work" / "landmark_fit.npz")
    refined = load_tracking(data / ".work" / "tracking.npz")
    seen = np.array([i for i in range(FRAMES) if i not in GONE])
    truth = created["truth"]
    flame = FlameModel.from_files(created["tmp"] / "flame_standin.npz", golden_dir("flashavatar"))
    template = flame.v_template.numpy()
    face = np.flatnonzero((template[:, 2] > template[:, 2].max() - 0.07) & (np.arange(len(template)) < LEFT_EYEBALL.start))
    with open(data / "crops.csv", newline="") as fh:
        box = np.array([[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in csv.DictReader(fh)])[seen]

    def errors(res: Any) -> tuple[float, float]:
        px = res.project(res.vertices(flame)[seen][:, face])
        in_video = box[:, None, :2] + px * ((box[:, 2] - box[:, 0]) / res.image_size)[:, None, None]
        vertex = np.median(np.linalg.norm(in_video - np.asarray(truth["vertices_px"])[seen][:, face], axis=-1))
        return float(np.median(rotation_error_deg(res.R[seen], truth["R"][seen]))), float(vertex)

    rot_fit, vertex_fit = errors(fitted)
    rot_refined, vertex_refined = errors(refined)
    assert rot_refined < rot_fit and vertex_refined < vertex_fit, (rot_fit, rot_refined, vertex_fit, vertex_refined)
    assert not np.array_equal(refined.expression, fitted.expression)
    assert np.array_equal(refined.jaw, fitted.jaw) and np.array_equal(refined.shape, fitted.shape)


def test_masks_cover_the_head_and_the_report_is_written(created: dict[str, Any]) -> None:
    from PIL import Image

    data = created["out"] / "dataset"
    alpha = np.asarray(Image.open(data / "alpha" / "00010.jpg").convert("L"))
    head = np.asarray(Image.open(data / "parsing" / "00010_neckhead.png"))
    assert alpha[200:300, 200:300].mean() > 200  # the face in the crop's middle
    assert alpha[:20, :20].mean() < 60  # the backdrop
    assert (head > 0).sum() <= (alpha > 127).sum() + 100 and head[200:300, 200:300].min() == 255
    report = (data / "report" / "report.md").read_text()
    assert f"face-mesh detection rate | {(FRAMES - len(GONE)) / FRAMES * 100:.1f} %" in report
    assert f"images {GONE[0]:05d}-{GONE[-1]:05d}: no face for 0.5 s or more" in report
    for name in ("contact_sheet.png", "landmark_error.png", "jitter.png"):
        with Image.open(data / "report" / name) as im:
            assert im.size[0] >= 256


def test_the_avatar_loads_renders_and_previews(created: dict[str, Any]) -> None:
    import av

    from bridge.core.config import load_config
    from bridge.core.face_params import FaceParams
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    out = created["out"]
    cfg = load_config(out / "avatar.toml", overrides={"video": {"width": 128, "height": 128},
                                                      "avatar": {"device": "cpu"}})
    assert cfg.face.diffposetalk.style == out / "style.npy" and np.load(out / "style.npy").shape == (32,)
    avatar = FlashAvatarAvatar.from_config(cfg)
    img = avatar.render(FaceParams.neutral())
    avatar.close()
    green = (img.rgb[..., 1] > 200) & (img.rgb[..., 0] < 60) & (img.rgb[..., 2] < 60)
    assert 0.02 < 1 - green.mean() < 0.9  # a head in front of the training green
    with av.open(str(out / "preview.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (512, 1024, 3)
    left, right = frames[0][:, :512].astype(int), frames[0][:, 512:].astype(int)
    assert left[..., 1].mean() < 200 and (right[..., 1] > 200).mean() > 0.3  # the video | the avatar on green


def test_a_second_run_skips_complete_stages_and_redoes_a_damaged_one(created: dict[str, Any], capsys: Any) -> None:
    data = created["out"] / "dataset"
    (data / "alpha" / "00005.jpg").unlink()  # a stage's output lost after it completed
    capsys.readouterr()
    args = ["avatar", "prepare", str(created["clip"]), "--out", str(data), *_flame_opts(created["tmp"]),
            "--device", "cpu"]
    assert main(args) == 0
    said = capsys.readouterr().out
    for stage in ("detect", "crop", "track", "refine", "parsing", "report"):
        assert f"[{stage}] complete from an earlier run: skipped" in said
    assert "[alpha] complete" not in said and (data / "alpha" / "00005.jpg").is_file()
    assert "stage times:" in said


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_create_on_cuda(created: dict[str, Any], tmp_path: Path) -> None:
    """The same clip on the GPU: tracking, training and the preview run there and give an avatar."""
    cuda = [a if a != "cpu" else "cuda" for a in TINY]
    out = tmp_path / "me"
    assert main(["avatar", "create", str(created["clip"]), "--out", str(out), *_flame_opts(created["tmp"]),
                 *cuda]) == 0
    assert (out / "avatar.toml").is_file() and (out / "preview.mp4").stat().st_size > 1000
    assert len(list((out / "dataset" / "checkpoint").glob("*.frame"))) == FRAMES - 1 - len(GONE)
