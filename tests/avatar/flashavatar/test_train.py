"""Training end to end on the CPU, on a tiny synthetic dataset made by the project's own dataset maker:

- the synthetic dataset is what it claims (its ground truth is the teacher's render on green);
- `avatar-bridge avatar train` learns (the loss falls by at least half), Ctrl-C saves and exits with 130;
- the checkpoint is upstream's tuple (restorable the way upstream's test.py restores one), the avatar driver
  loads it through avatar.toml and renders what the trainer rendered, and --resume continues both optimisers.

To stay small the avatar keeps only the front of the (synthetic) face (~2.4k Gaussians) and the deformation MLP
is 2 x 32 wide, started at zero (the default init of so small an MLP throws the Gaussians out of the 64 x 64
frame); the full-size recipe is exercised on the GPU by bench/train_synthetic.py.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.golden_files import golden_dir, require

GOLDEN = golden_dir("flashavatar")
SIZE = 64
FRAMES = 12
MLP = ("--mlp-width", "32", "--mlp-layers", "2")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread is fastest, and immune to other processes competing for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    require("flashavatar", "flame_synthetic.pkl", "FlameMesh.obj", "l_eyelid.npy", "r_eyelid.npy",
            "golden_seed0.npz")
    from drivers.avatar.flame.files import load_flame_arrays
    from drivers.avatar.flashavatar.train.outputs import SubjectFilePaths

    tmp = tmp_path_factory.mktemp("subject")
    os.environ["AVATAR_BRIDGE_CACHE"] = str(tmp / "cache")
    v = load_flame_arrays(GOLDEN / "flame_synthetic.pkl")["v_template"]
    masks = tmp / "FLAME_masks.pkl"  # the face's front only: the back of the head is "boundary"
    with open(masks, "wb") as fh:
        pickle.dump({"boundary": np.nonzero(v[:, 2] < np.percentile(v[:, 2], 70))[0]}, fh, protocol=2)
    np.save(tmp / "shape.npy", np.load(GOLDEN / "golden_seed0.npz")["shape"])
    return SubjectFilePaths(GOLDEN / "flame_synthetic.pkl", masks, GOLDEN / "FlameMesh.obj", GOLDEN)


def _flame_opts(subject) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--flame-model", str(subject.flame_model), "--flame-masks", str(subject.flame_masks),
            "--flame-mesh", str(subject.flame_mesh), "--eyelids-dir", str(subject.eyelids_dir)]


@pytest.fixture(scope="module")
def dataset(subject, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    from bridge.cli import main

    out = tmp_path_factory.mktemp("synthetic") / "data"
    shape = Path(subject.flame_masks).parent / "shape.npy"
    assert main(["avatar", "make-synthetic", str(out), *_flame_opts(subject), "--shape", str(shape),
                 "--frames", str(FRAMES), "--size", str(SIZE), "--device", "cpu", *MLP]) == 0
    return out


def test_synthetic_ground_truth_is_the_teacher_on_green(subject, dataset: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from bridge.core.face_params import FaceParams
    from drivers.avatar.flame.tracker import load_tracker_frame
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
    from drivers.avatar.flashavatar.train import dataset as ds
    from drivers.avatar.flashavatar.train.losses import psnr

    layout = ds.find_layout(dataset)
    frames = ds.list_frames(layout)
    assert len(frames) == FRAMES and frames[3].image.name == "00004.jpg"  # tracker frame m <-> image m + 1
    i = 5
    tf = load_tracker_frame(frames[i].tracking)
    teacher = FlashAvatarAvatar(checkpoint=dataset / "teacher" / "chkpnt_teacher.pth", flame_model=subject.flame_model,
                                flame_masks=subject.flame_masks, flame_mesh=subject.flame_mesh,
                                eyelids_dir=subject.eyelids_dir, tracker_frame=frames[i].tracking, width=SIZE,
                                height=SIZE, renderer="cpu", device="cpu", background=(0.0, 1.0, 0.0))
    img = teacher.render(FaceParams.from_6d(tf.expr, tf.jaw6, tf.eyes12, tf.eyelids)).rgb
    pixels = ds.load_frame(frames[i], (SIZE, SIZE), (SIZE, SIZE))
    green = torch.tensor([0.0, 1.0, 0.0])
    gt, head, _ = ds.ground_truth(torch.from_numpy(pixels), green)
    assert float(head.mean()) > 0.1  # the head covers the frame's middle
    assert float(psnr(torch.from_numpy(img).float() / 255.0, gt)) > 35.0
    # The mouth mask is inside the head in every frame...
    for n, f in enumerate(frames):
        _, head, mouth = ds.ground_truth(torch.from_numpy(ds.load_frame(f, (SIZE, SIZE), (SIZE, SIZE))), green)
        assert not bool(((mouth > 0.5) & (head < 0.5)).any()), f"frame {n}: mouth pixels outside the head"
    # ...and a mouth drawn into a frame's parsing mask comes back in the mouth channel where it was drawn
    # (upstream's mouth loss reads it there), in a copy of the dataset.
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    drawn = np.zeros((SIZE, SIZE), np.uint8)
    drawn[40:48, 24:40] = 255
    Image.fromarray(drawn).save(copy / "parsing" / frames[i].mouth_mask.name)
    frame = ds.list_frames(ds.find_layout(copy))[i]
    _, _, mouth = ds.ground_truth(torch.from_numpy(ds.load_frame(frame, (SIZE, SIZE), (SIZE, SIZE))), green)
    assert torch.equal(mouth[..., 0] > 0.5, torch.from_numpy(drawn > 0))


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:  # type: ignore[no-untyped-def, type-arg]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"training exited early with {proc.returncode}: {out[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("training did not get far enough in time")


def _logged_iterations(log: Path) -> int:
    if not log.is_file():
        return 0
    rows = log.read_text().strip().splitlines()[1:]
    return int(rows[-1].split(",")[0]) if rows else 0


def test_train_learns_saves_on_ctrl_c_and_the_driver_renders_it(subject, dataset: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "me"
    cmd = [sys.executable, "-m", "bridge.cli", "avatar", "train", str(dataset), "--out", str(out),
           *_flame_opts(subject), "--iterations", "100000", "--size", str(SIZE), "--device", "cpu", *MLP,
           "--mlp-init", "zero",
           "--log-every", "10", "--preview-every", "50", "--checkpoint-every", "100000", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[3])
    _wait_for(lambda: _logged_iterations(out / "train_log.csv") >= 200, 240, proc)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout
    assert "Ctrl-C" in stdout and "--resume" in stdout and "Traceback" not in stdout

    from drivers.avatar.flashavatar.train.outputs import latest_checkpoint, read_csv

    ckpt = latest_checkpoint(out)
    assert ckpt is not None
    stopped = int(ckpt.stem.removeprefix("chkpnt"))
    assert stopped >= 200 and f"stopped at iteration {stopped}" in stdout
    losses = [float(r["loss"]) for r in read_csv(out / "train_log.csv")]
    assert losses[-1] <= 0.5 * losses[0], f"loss went from {losses[0]:.4g} to {losses[-1]:.4g}"
    metrics = read_csv(out / "metrics.csv")
    assert metrics[-1]["iteration"] == str(stopped) and float(metrics[-1]["psnr"]) > 15
    from PIL import Image

    with Image.open(out / "preview" / "000050.jpg") as im:
        assert im.size == (3 * SIZE, SIZE)  # ground truth | render | difference

    _restores_like_upstream(ckpt, stopped)
    _driver_renders_what_the_trainer_rendered(subject, dataset, out, stopped)


def _restores_like_upstream(path: Path, iteration: int) -> None:
    """What upstream's test.py does with a checkpoint: Deform_Model.restore and GaussianModel.restore, i.e.
    load_state_dict into its MLP and into Adams built with its parameter groups."""
    from drivers.avatar.flashavatar.model import DeformMLP

    (net_state, net_opt), gauss, it = torch.load(path, map_location="cpu", weights_only=True)
    assert it == iteration and len(gauss) == 12
    net = DeformMLP(171, 10, 32, 2)
    net.load_state_dict(net_state)
    torch.optim.Adam([{"params": net.parameters(), "lr": 1e-4}], betas=(0.9, 0.999)).load_state_dict(net_opt)
    sh, xyz, dc, rest, scaling, rotation, opacity, radii, accum, denom, opt_state, lr_scale = gauss
    n = xyz.shape[0]
    assert isinstance(sh, int) and sh == min(3, iteration // 500) and lr_scale == 0  # +1 every 500 iterations
    for p, shape in ((dc, (n, 1, 3)), (rest, (n, 15, 3)), (scaling, (n, 3)), (rotation, (n, 4)), (opacity, (n, 1))):
        assert isinstance(p, torch.nn.Parameter) and p.shape == shape
    assert radii.shape == (n,) and accum.shape == (n, 1) and denom.shape == (n, 1)
    groups = [{"params": [dc], "lr": 0.0025, "name": "f_dc"}, {"params": [rest], "lr": 0.0025 / 20, "name": "f_rest"},
              {"params": [opacity], "lr": 0.05, "name": "opacity"}, {"params": [scaling], "lr": 0.005, "name": "scaling"},
              {"params": [rotation], "lr": 0.001, "name": "rotation"}]
    opt = torch.optim.Adam(groups, lr=0.0, eps=1e-15)
    opt.load_state_dict(opt_state)
    assert [g["name"] for g in opt.param_groups] == ["f_dc", "f_rest", "opacity", "scaling", "rotation"]
    assert all(g["eps"] == 1e-15 for g in opt.param_groups)


def _driver_renders_what_the_trainer_rendered(subject, dataset: Path, out: Path, stopped: int) -> None:  # type: ignore[no-untyped-def]
    from bridge.core.config import load_config
    from bridge.core.face_params import FaceParams
    from drivers.avatar.flame.tracker import load_tracker_frame
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
    from drivers.avatar.flashavatar.train.trainer import Trainer, TrainOptions

    cfg = load_config(out / "avatar.toml", overrides={"video": {"width": SIZE, "height": SIZE},
                                                      "avatar": {"renderer": "cpu", "device": "cpu"}}, environ={})
    assert cfg.avatar.kind == "flashavatar" and cfg.avatar.checkpoint == out / f"chkpnt{stopped}.pth"
    driver = FlashAvatarAvatar.from_config(cfg)
    tf = load_tracker_frame(out / "00000.frame")
    shown = driver.render(FaceParams.from_6d(tf.expr, tf.jaw6, tf.eyes12, tf.eyelids)).rgb

    opts = TrainOptions(iterations=stopped + 10, size=SIZE, device="cpu", log_every=5, progress=False,
                        resume=True, lpips=False)
    trainer = Trainer(dataset, out, subject, opts, say=lambda _line: None)
    assert trainer.start_iteration == stopped
    with torch.no_grad():
        rgb, _ = trainer.render_frame(0)  # the tracker's frame 0: the camera avatar.toml's tracker_frame gives
    mine = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    diff = np.abs(mine.astype(int) - shown.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.02

    result = trainer.run()  # --resume: ten more iterations, both Adams carry on from their saved states
    assert result.iteration == stopped + 10 and not result.interrupted
    (_, net_opt), gauss, _ = torch.load(out / f"chkpnt{stopped + 10}.pth", map_location="cpu", weights_only=True)
    steps = {float(s["step"]) for s in list(net_opt["state"].values()) + list(gauss[10]["state"].values())}
    assert steps == {float(stopped + 10)}


def test_cli_errors_are_one_line(subject, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from bridge.cli import main

    assert main(["avatar", "train", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                 *_flame_opts(subject)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    assert main(["avatar", "train", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--flame-model" in capsys.readouterr().err


def _tiny_run(subject, dataset: Path, out: Path, iterations: int = 2, **options: bool):  # type: ignore[no-untyped-def]
    from drivers.avatar.flashavatar.train.trainer import Trainer, TrainOptions

    opts = TrainOptions(iterations=iterations, size=SIZE, device="cpu", log_every=1, progress=False, lpips=False,
                        hidden_dim=32, hidden_layers=2, zero_head=True, **options)
    return Trainer(dataset, out, subject, opts, say=lambda _line: None).run()


def _train_cli(subject, dataset: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "bridge.cli", "avatar", "train", str(dataset), "--out", str(out),
           *_flame_opts(subject), "--iterations", "2", "--size", str(SIZE), "--device", "cpu", *MLP, "--no-lpips",
           "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3],
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _one_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("avatar-bridge: error:")]
    assert len(lines) == 1, run.stderr[-2000:]
    return lines[0]


def test_train_never_overwrites_another_avatar_or_a_file(subject, dataset: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other"
    other.mkdir()
    (other / "chkpnt150000.pth").write_bytes((GOLDEN / "chkpnt_seed0.pth").read_bytes())
    (other / "avatar.toml").write_text('[avatar]\nkind = "flashavatar"\ncheckpoint = "chkpnt150000.pth"\n')
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    line = _one_line(_train_cli(subject, dataset, other))
    assert "already holds an avatar" in line and "chkpnt150000.pth" in line and "--overwrite" in line, line
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    line = _one_line(_train_cli(subject, dataset, a_file))
    assert "is a file" in line and a_file.read_text() == "mine", line

    line = _one_line(_train_cli(subject, dataset, other, "--resume", "--overwrite"))
    assert "give one" in line


def test_overwrite_removes_the_old_checkpoints_and_resume_checks_what_they_were_trained_on(  # type: ignore[no-untyped-def]
        subject, dataset: Path, tmp_path: Path) -> None:
    import shutil

    from drivers.avatar.flashavatar.train.outputs import (
        OutputFolderError,
        SubjectFilePaths,
        latest_checkpoint,
    )

    out = tmp_path / "me"
    out.mkdir()
    (out / "chkpnt999999.pth").write_bytes((GOLDEN / "chkpnt_seed0.pth").read_bytes())  # another avatar's, newer
    result = _tiny_run(subject, dataset, out, overwrite=True)
    assert result.iteration == 2 and latest_checkpoint(out) == out / "chkpnt2.pth"  # the foreign one is gone
    assert (out / "training.toml").is_file()

    assert _tiny_run(subject, dataset, out, iterations=4, resume=True).iteration == 4  # same data: continues

    fewer = tmp_path / "fewer"  # the same subject with its last tracked frame left out: another dataset
    shutil.copytree(dataset, fewer)
    last = max(fewer.rglob("*.frame"))
    last.unlink()
    with pytest.raises(OutputFolderError, match="a different dataset"):
        _tiny_run(subject, fewer, out, iterations=6, resume=True)

    masks = tmp_path / "FLAME_masks.pkl"  # other FLAME files: a different masks file
    with open(masks, "wb") as fh:
        pickle.dump({"boundary": np.arange(10)}, fh, protocol=2)
    swapped = SubjectFilePaths(subject.flame_model, masks, subject.flame_mesh, subject.eyelids_dir)
    with pytest.raises(OutputFolderError, match="different FLAME files"):
        _tiny_run(swapped, dataset, out, iterations=6, resume=True)
    assert latest_checkpoint(out) == out / "chkpnt4.pth"

    (out / "training.toml").unlink()  # nothing says what it was trained on: no guessing
    with pytest.raises(OutputFolderError, match="training.toml"):
        _tiny_run(subject, dataset, out, iterations=6, resume=True)
