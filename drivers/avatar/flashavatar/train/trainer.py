"""FlashAvatar training (upstream's recipe) on the project's differentiable splatting: gsplat on CUDA, the torch
reference rasteriser elsewhere.

Per iteration: one random training frame (upstream's order: shuffled passes over at most 2000 frames); its
ground truth composited on the device; deformation MLP + Gaussians on the FLAME vertices precomputed for that
frame; rasterise; Huber + 40 × mouth Huber (+ 0.05 × LPIPS after 15k); both Adam optimisers step. The SH degree
rises every 500 iterations up to 3. Nothing reads back to the host inside the loop except every `log_every`
iterations (the loss for the progress bar), so the GPU never waits on Python.

Ctrl-C stops after the current iteration, writes a checkpoint and returns; `resume` continues from the latest
checkpoint in the output folder with both optimisers' states.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.core.errors import UserError
from drivers.avatar.flame.tracker import tracker_camera
from drivers.avatar.flashavatar.checkpoint import CheckpointError
from drivers.avatar.flashavatar.model import SubjectFiles
from drivers.avatar.flashavatar.train import dataset as ds
from drivers.avatar.flashavatar.train.losses import (
    HUBER_DELTA,
    LPIPS_FROM,
    LPIPS_WEIGHT,
    MOUTH_WEIGHT,
    Perceptual,
    masked_psnr,
    photometric_loss,
    psnr,
    ssim,
)
from drivers.avatar.flashavatar.train.model import HIDDEN_DIM, HIDDEN_LAYERS, TrainableAvatar
from drivers.avatar.flashavatar.train.outputs import (
    CsvLog,
    ResumeState,
    SubjectFilePaths,
    TrainingFingerprint,
    check_output_folder,
    checkpoint_path,
    latest_checkpoint,
    read_resume_state,
    save_checkpoint,
    take_output_folder,
    write_avatar_toml,
    write_preview,
)
from drivers.avatar.flashavatar.train.progress import LoadProgress
from drivers.avatar.splat.cameras import FAR, NEAR
from drivers.avatar.splat.gaussians import Camera, RasterSettings

log = logging.getLogger(__name__)

MLP_LR = 1e-4
GAUSSIAN_LRS = {"f_dc": 0.0025, "f_rest": 0.0025 / 20.0, "opacity": 0.05, "scaling": 0.005, "rotation": 0.001}
GAUSSIAN_GROUPS = (("f_dc", "features_dc"), ("f_rest", "features_rest"), ("opacity", "opacity"),
                   ("scaling", "scaling_base"), ("rotation", "rotation_base"))
GAUSSIAN_EPS = 1e-15
SH_EVERY = 500
PASS_FRAMES = 2000  # upstream draws frames from shuffled passes over at most this many
GREEN = (0.0, 1.0, 0.0)  # upstream's background (the ground truth is composited onto it)
WHITE = (1.0, 1.0, 1.0)  # upstream's --white_background


def make_optimizers(model: TrainableAvatar) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Upstream's two Adams: the MLP's (lr 1e-4) and the Gaussians' (five named groups, eps 1e-15, no xyz group:
    positions are never free parameters). Fused kernels on CUDA (same update, fewer launches)."""
    fused = model.features_dc.is_cuda
    mlp_opt = torch.optim.Adam(model.mlp.parameters(), lr=MLP_LR, betas=(0.9, 0.999), fused=fused)
    groups = [{"params": [getattr(model, attr)], "lr": GAUSSIAN_LRS[name], "name": name}
              for name, attr in GAUSSIAN_GROUPS]
    return mlp_opt, torch.optim.Adam(groups, lr=0.0, eps=GAUSSIAN_EPS, fused=fused)


class TrainingError(UserError, ValueError):
    """Training cannot start or continue as asked; the message says what to change."""


@dataclass
class TrainOptions:
    iterations: int = 150_000
    size: int | None = 512  # training image height; None keeps the frames' size
    device: str = "auto"
    checkpoint_every: int = 5000
    preview_every: int = 500
    eval_every: int = 0  # 0: evaluate the held-out frames with every checkpoint
    log_every: int = 100
    seed: int = 0
    test_frames: int | None = None  # None: upstream's split
    frame_offset: int = ds.FRAME_OFFSET
    lpips: bool = True
    lpips_from: int = LPIPS_FROM
    lpips_weight: float = LPIPS_WEIGHT
    mouth_weight: float = MOUTH_WEIGHT
    huber_delta: float = HUBER_DELTA
    hidden_dim: int = HIDDEN_DIM
    hidden_layers: int = HIDDEN_LAYERS
    zero_head: bool = False  # start the deformation at zero instead of upstream's default MLP init
    white_background: bool = False
    resume: bool = False
    overwrite: bool = False  # replace the avatar already in the output folder
    progress: bool = True
    workers: int = 4

    def check(self) -> None:
        for name in ("iterations", "checkpoint_every", "preview_every", "log_every", "hidden_dim", "hidden_layers"):
            if getattr(self, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1")
        if self.eval_every < 0:
            raise TrainingError("--eval-every must be 0 (with each checkpoint) or more")


@dataclass
class Scores:
    psnr: float
    psnr_head: float
    ssim: float


@dataclass
class TrainResult:
    iteration: int
    checkpoint: Path
    avatar_toml: Path
    interrupted: bool
    scores: Scores | None = None
    test_frames: int = 0
    seconds: float = 0.0
    its_per_s: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)


class StageTimer:
    """Per-stage time of the training step: CUDA events on the GPU (read back once at the end), the wall clock
    on the CPU. Only used when profiling; the marks cost nothing otherwise."""

    STAGES = ("data", "forward", "raster", "loss", "backward raster", "backward mlp", "optimiser")

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: list[list[Any]] = []
        self.totals = dict.fromkeys(self.STAGES, 0.0)
        self.steps = 0
        self._marks: list[Any] = []

    def _now(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self._marks = [self._now()]

    def mark(self) -> None:
        self._marks.append(self._now())

    def stop(self) -> None:
        self.mark()
        if len(self._marks) == len(self.STAGES) + 1:
            self.pending.append(self._marks)
        self._marks = []

    def collect(self) -> dict[str, float]:
        """Mean milliseconds per step for each stage over the steps timed so far."""
        if self.cuda:
            torch.cuda.synchronize()
        for marks in self.pending:
            for name, a, b in zip(self.STAGES, marks[:-1], marks[1:]):
                self.totals[name] += a.elapsed_time(b) if self.cuda else (b - a) * 1e3
            self.steps += 1
        self.pending = []
        return {k: v / max(self.steps, 1) for k, v in self.totals.items()}


class Trainer:
    """One training run: dataset → output folder (see `outputs`)."""

    def __init__(self, dataset: Path | str, out: Path | str, files: SubjectFilePaths, options: TrainOptions,
                 tracking: Path | str | None = None, say: Callable[[str], None] = print) -> None:
        options.check()
        self.opts = options
        self.say = say
        self.out = Path(out).expanduser()
        self.files = files
        check_output_folder(self.out, options.resume, options.overwrite)
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("--device cuda but no CUDA device is available; use --device cpu (tiny runs only)")
        if device not in ("cpu", "cuda"):
            raise TrainingError(f"--device {device!r}: use auto, cpu or cuda")
        self.device = torch.device(device)
        torch.manual_seed(options.seed)
        self.rng = np.random.default_rng(options.seed)

        layout = ds.find_layout(dataset, tracking, options.frame_offset)
        self.progress = LoadProgress(say, bar=options.progress)
        self.frames = ds.list_frames(layout, self.progress)
        self.fingerprint = TrainingFingerprint.of([(f.index, f.tracking) for f in self.frames], files)
        check_output_folder(self.out, options.resume, options.overwrite, self.fingerprint)
        self.tracking = ds.load_tracking(self.frames, self.progress)
        self.train_idx, self.test_idx = ds.split(len(self.frames), options.test_frames)
        source_hw = ds.image_size(self.frames)
        self.height, self.width = ds.target_size(source_hw, options.size)

        self.resume_state: ResumeState | None = None
        if options.resume:
            found = latest_checkpoint(self.out) if self.out.is_dir() else None
            if found is None:
                raise TrainingError(f"--resume: {self.out} has no chkpnt*.pth to continue from; start without "
                                    "--resume")
            self.resume_state = read_resume_state(found)
        hidden, layers = options.hidden_dim, options.hidden_layers
        if self.resume_state is not None:
            hidden, layers = self.resume_state.checkpoint.hidden_dim, self.resume_state.checkpoint.hidden_layers

        subject = SubjectFiles.load(files.flame_model, files.flame_masks, files.flame_mesh, files.eyelids_dir,
                                    self.device)
        self.model = TrainableAvatar(subject, self.tracking.shape, self.device, hidden, layers, options.zero_head)
        cam = tracker_camera(self.tracking.first, self.width, self.height, device=self.device)
        self.K = cam.K
        self.viewmats = self.tracking.viewmats().to(self.device)
        self.cond = self.tracking.cond.to(self.device)
        self.vertices = self.model.frame_vertices(self.cond)
        self.background = torch.tensor(WHITE if options.white_background else GREEN, device=self.device)
        self.settings = RasterSettings(eps2d=0.3)
        from drivers.avatar.splat.select import select_renderer

        self.renderer = select_renderer("auto", device, differentiable=True)
        if self.device.type == "cuda" and self.renderer.name != "gsplat":
            self.say("gsplat is not importable: training on CUDA with the (slow) torch reference rasteriser; "
                     "pip install gsplat")
        self.mlp_opt, self.gauss_opt = make_optimizers(self.model)
        self.start_iteration = 0
        if self.resume_state is not None:
            self._restore(self.resume_state)
        self.perceptual: Perceptual | None = None
        self._perceptual_note = ""
        if options.lpips and options.iterations > max(options.lpips_from, self.start_iteration):
            self.perceptual, self._perceptual_note = Perceptual.load(self.device)
        self.store: ds.FrameStore | None = None
        self._stop = False
        self._abort = False
        self.timer: StageTimer | None = None
        self._positions: torch.Tensor | None = None

    # -- setup -----------------------------------------------------------------------------------------------
    def _restore(self, state: ResumeState) -> None:
        ck = state.checkpoint
        m = self.model
        if ck.num_gaussians != m.num_gaussians:
            raise CheckpointError(f"{state.path} has {ck.num_gaussians} Gaussians but these FLAME files give "
                                  f"{m.num_gaussians}; resume with the FLAME mesh and masks it was trained with")
        m.mlp.load_state_dict(ck.mlp_state)
        with torch.no_grad():
            for name, p in m.gaussian_parameters():
                src = getattr(ck, name)
                if src.shape != p.shape:
                    raise CheckpointError(f"{state.path}: {name} has shape {tuple(src.shape)}, this run needs "
                                          f"{tuple(p.shape)}")
                p.copy_(src)
        m.active_sh_degree = ck.active_sh_degree
        try:
            self.mlp_opt.load_state_dict(state.mlp_optimizer)
            self.gauss_opt.load_state_dict(state.gaussian_optimizer)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{state.path}: its optimiser state does not fit this model ({exc}); start a new "
                                  "run without --resume") from None
        self.start_iteration = ck.iteration

    def frame_order(self) -> Iterator[int]:
        """Upstream's frame order: shuffled passes over (at most 2000 of) the training frames."""
        train = np.asarray(self.train_idx)
        while True:
            yield from (int(i) for i in self.rng.permutation(train)[:PASS_FRAMES])

    def camera(self, index: int) -> Camera:
        return Camera(self.viewmats[index], self.K, self.width, self.height, NEAR, FAR)

    # -- one frame ---------------------------------------------------------------------------------------------
    def render_frame(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The current model's image (H,W,3) of frame `index` and its Gaussians' positions (N,3)."""
        means, quats, scales = self.model(self.cond[index:index + 1], self.vertices[index:index + 1])
        rgb, _ = self.renderer.render(self.model.gaussians(means[0], quats[0], scales[0]), self.camera(index),
                                      self.background, self.settings)
        return rgb, means[0]

    def step(self, iteration: int, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimisation step on frame `index`: returns (loss, gt, render), detached."""
        assert self.store is not None
        t = self.timer
        if t is not None:
            t.start()
        gt, head, mouth = ds.ground_truth(self.store.get(index), self.background)
        if t is not None:
            t.mark()
        means, quats, scales = self.model(self.cond[index:index + 1], self.vertices[index:index + 1],
                                          on_grad=t.mark if t is not None else None)
        gaussians = self.model.gaussians(means[0], quats[0], scales[0])
        if t is not None:
            t.mark()
        rgb, _ = self.renderer.render(gaussians, self.camera(index), self.background, self.settings)
        if t is not None:
            t.mark()
        loss = photometric_loss(rgb, gt, mouth, self.opts.huber_delta, self.opts.mouth_weight)
        if self.perceptual is not None and iteration > self.opts.lpips_from:
            loss = loss + self.opts.lpips_weight * self.perceptual(rgb, gt, head)
        if t is not None:
            t.mark()
        loss.backward()  # the timer's "backward raster" mark fires inside, when the MLP's output has its gradient
        if t is not None:
            t.mark()
        self.mlp_opt.step()
        self.gauss_opt.step()
        self.mlp_opt.zero_grad(set_to_none=True)
        self.gauss_opt.zero_grad(set_to_none=True)
        if t is not None:
            t.stop()
        self._positions = means[0].detach()
        return loss.detach(), gt, rgb.detach()

    def initialise(self, index: int) -> None:
        """Upstream's first iteration: the Gaussians start from their positions on the first training frame."""
        with torch.no_grad():
            means, _, _ = self.model(self.cond[index:index + 1], self.vertices[index:index + 1])
        self.model.initialise(means[0])

    # -- evaluation ----------------------------------------------------------------------------------------------
    def evaluate(self, indices: list[int] | None = None) -> Scores:
        """Mean PSNR (dB, whole image and head only) and SSIM of the renders of the held-out frames."""
        assert self.store is not None
        idx = self.test_idx if indices is None else indices
        totals = torch.zeros(3, device=self.device)
        with torch.no_grad():
            for i in idx:
                gt, head, _ = ds.ground_truth(self.store.get(i), self.background)
                rgb, _ = self.render_frame(i)
                totals += torch.stack([psnr(rgb, gt), masked_psnr(rgb, gt, head), ssim(rgb, gt)])
        p, ph, s = (totals / len(idx)).tolist()
        return Scores(p, ph, s)

    # -- the run -----------------------------------------------------------------------------------------------
    def load_images(self) -> None:
        if self.store is None:
            data = ds.load_images(self.frames, (self.height, self.width), self.opts.workers, self.progress)
            self.store = ds.FrameStore(data, self.device)

    def _save(self, iteration: int) -> tuple[Path, Path]:
        assert self._positions is not None
        path = save_checkpoint(checkpoint_path(self.out, iteration), self.model, self.mlp_opt, self.gauss_opt,
                               self._positions, iteration)
        bg = WHITE if self.opts.white_background else GREEN
        toml = write_avatar_toml(self.out, path, self.files, self.frames[0].tracking, bg)
        return path, toml

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop:  # a second Ctrl-C: abort without saving (checkpoints already written stay intact)
            self._abort = True
            raise KeyboardInterrupt
        self._stop = True
        self.say("\nCtrl-C: stopping after this iteration and saving a checkpoint (Ctrl-C again to abort)")

    def request_stop(self) -> None:
        """Stop after the current iteration, as Ctrl-C does."""
        self._stop = True

    def run(self) -> TrainResult:
        opts = self.opts
        take_output_folder(self.out, self.fingerprint, opts.overwrite)
        if self._perceptual_note:
            self.say(self._perceptual_note)
        n_test = len(self.test_idx)
        first, last = self.frames[self.test_idx[0]].index, self.frames[self.test_idx[-1]].index
        self.say(f"{len(self.frames)} tracked frames: {len(self.train_idx)} for training, {n_test} held out "
                 f"({first:05d}-{last:05d}); {self.model.num_gaussians} Gaussians; {self.width}x{self.height} on "
                 f"{self.device.type} with the {self.renderer.name} rasteriser")
        self.load_images()
        fresh = self.start_iteration == 0
        t0 = time.perf_counter()
        metrics = CsvLog(self.out / "metrics.csv", ["iteration", "psnr", "psnr_head", "ssim", "test_frames",
                                                    "seconds"], fresh)

        scored: dict[int, Scores] = {}

        def score(iteration: int) -> Scores:
            if iteration not in scored:  # a run stopped right after an evaluation is not evaluated twice
                sc = scored[iteration] = self.evaluate()
                metrics.add(iteration, sc.psnr, sc.psnr_head, sc.ssim, n_test, time.perf_counter() - t0)
            return scored[iteration]

        losses = CsvLog(self.out / "train_log.csv", ["iteration", "loss", "its_per_s", "seconds"], fresh)
        result = TrainResult(self.start_iteration, Path(), Path(), False, test_frames=n_test)
        if self.start_iteration >= opts.iterations:
            raise TrainingError(f"{self.resume_state.path if self.resume_state else 'the run'} is already at "
                                f"iteration {self.start_iteration}; give --iterations above it to train further")
        order = self.frame_order()
        eval_every = opts.eval_every or opts.checkpoint_every
        restore_handler: Any = None
        if threading.current_thread() is threading.main_thread():
            restore_handler = signal.getsignal(signal.SIGINT) or signal.default_int_handler
            signal.signal(signal.SIGINT, self._on_sigint)
        bar = None
        if opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=opts.iterations, initial=self.start_iteration, unit="it", dynamic_ncols=True,
                       desc="training")
        loss_sum = torch.zeros((), device=self.device)
        loss_n = 0
        t_log = time.perf_counter()
        it = self.start_iteration
        try:
            while it < opts.iterations and not self._stop:
                it += 1
                if it % SH_EVERY == 0:
                    self.model.one_up_sh_degree()
                index = next(order)
                if it == 1:
                    self.initialise(index)
                    score(0)  # where the curve starts
                loss, gt, rgb = self.step(it, index)
                loss_sum += loss
                loss_n += 1
                if bar is not None:
                    bar.update(1)
                if it % opts.log_every == 0 or it == opts.iterations:
                    now = time.perf_counter()
                    mean = float(loss_sum) / loss_n  # the one read-back every log_every iterations
                    if not math.isfinite(mean):
                        raise TrainingError(f"the loss became {mean} at iteration {it}; the run diverged (check "
                                            "the dataset's masks and tracking), restart or resume from an earlier "
                                            "checkpoint")
                    losses.add(it, mean, loss_n / max(now - t_log, 1e-9), now - t0)
                    result.losses.append((it, mean))
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean:.4f}", sh=self.model.active_sh_degree, refresh=False)
                    loss_sum.zero_()
                    loss_n, t_log = 0, now
                if it % opts.preview_every == 0 or it == 1:
                    write_preview(self.out / "preview" / f"{it:06d}.jpg", gt, rgb)
                if it % opts.checkpoint_every == 0 and it != opts.iterations:
                    result.checkpoint, result.avatar_toml = self._save(it)
                if it % eval_every == 0 and it != opts.iterations:
                    sc = score(it)
                    if bar is not None:
                        bar.write(f"iteration {it}: held-out PSNR {sc.psnr:.2f} dB ({sc.psnr_head:.2f} dB on the "
                                  f"head), SSIM {sc.ssim:.4f}")
        except KeyboardInterrupt:
            if self._abort:
                raise
            self._stop = True  # outside the main thread Ctrl-C arrives as this: stop and save as usual
        finally:
            if bar is not None:
                bar.close()
            if restore_handler is not None:
                signal.signal(signal.SIGINT, restore_handler)
        elapsed = time.perf_counter() - t0
        result.iteration = it
        result.interrupted = self._stop and it < opts.iterations
        result.seconds = elapsed
        result.its_per_s = (it - self.start_iteration) / max(elapsed, 1e-9)
        if it > self.start_iteration:
            result.checkpoint, result.avatar_toml = self._save(it)
        elif self.resume_state is not None:
            result.checkpoint = self.resume_state.path
        result.scores = score(it)
        return result
