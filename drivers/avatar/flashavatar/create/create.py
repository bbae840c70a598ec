"""`avatar create`: a phone video → a trained FlashAvatar, its `avatar.toml` and a first `preview.mp4`.

The dataset is prepared in OUT/dataset (see prepare.py), the trainer writes its checkpoints and avatar.toml
into OUT, and the preview drives the new avatar with the video's own tracking. Run again after a stop and every
finished stage is skipped; training continues from its latest checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bridge.core.errors import UserError
from drivers.avatar.flashavatar.create.prepare import PrepareOptions, Preparer, PrepareResult, load_tracking
from drivers.avatar.flashavatar.create.stages import Progress
from drivers.avatar.flashavatar.train.outputs import SubjectFilePaths, latest_checkpoint

CUDA_ITERATIONS = 15_000  # a usable avatar in minutes on one GPU (upstream trains 150k)
CPU_ITERATIONS = 200  # enough to see the avatar take shape (~15 min on 2 cores); a real one needs the GPU


@dataclass
class CreateOptions:
    files: SubjectFilePaths
    device: str = "auto"
    iterations: int | None = None  # None: CUDA_ITERATIONS on CUDA, CPU_ITERATIONS on the CPU
    size: int | None = 512
    mlp_width: int = 256
    mlp_layers: int = 6
    zero_head: bool = False  # start the deformation at zero (for small MLPs) instead of upstream's init
    lpips: bool = True
    style_checkpoint: Path | None = None
    style_stats: Path | None = None  # the statistics file the style encoder was trained with
    preview_frames: int | None = None
    log: Callable[[str], None] = print
    progress: bool = True
    max_seconds: float | None = None


@dataclass
class CreateResult:
    out: Path
    dataset: PrepareResult
    avatar_toml: Path
    checkpoint: Path
    preview: Path
    iterations: int
    style: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device cpu (short test runs only)")
    return device


def schedule(device: str, iterations: int | None, log: Callable[[str], None]) -> int:
    """The training length: the option, else a usable default for the device (with a warning on the CPU)."""
    if iterations is not None:
        if iterations < 1:
            raise UserError(f"--iterations {iterations}: give 1 or more")
        return iterations
    if device == "cpu":
        log(f"warning: training on the CPU: {CPU_ITERATIONS} iterations only, a rough avatar to check the "
            f"pipeline; a usable one needs ~{CUDA_ITERATIONS} on a CUDA GPU (--device cuda), or give --iterations")
        return CPU_ITERATIONS
    return CUDA_ITERATIONS


def create(video: Path, out: Path, opts: CreateOptions) -> CreateResult:
    import time

    from drivers.avatar.flashavatar.create.preview import write_preview
    from drivers.avatar.flashavatar.train.trainer import Trainer, TrainOptions

    device = resolve_device(opts.device)
    iterations = schedule(device, opts.iterations, opts.log)
    preparer = Preparer(video, out / "dataset", PrepareOptions(opts.files, device=device, log=opts.log,
                                                               max_seconds=opts.max_seconds))
    prep = preparer.run()
    seconds = dict(prep.stage_seconds)

    t0 = time.perf_counter()
    done = _trained_to(out)
    if done < iterations or not (out / "avatar.toml").is_file():
        every = max(1, min(5000, iterations))
        topts = TrainOptions(iterations=iterations, size=opts.size, device=device, checkpoint_every=every,
                             preview_every=max(1, min(500, iterations)), log_every=max(1, min(100, iterations)),
                             hidden_dim=opts.mlp_width, hidden_layers=opts.mlp_layers, zero_head=opts.zero_head,
                             lpips=opts.lpips,
                             resume=latest_checkpoint(out) is not None, progress=opts.progress)
        result = Trainer(prep.dataset, out, opts.files, topts, say=opts.log).run()
        if result.interrupted:
            raise UserError(f"training stopped at iteration {result.iteration}; run the same command again to "
                            "continue")
        checkpoint = result.checkpoint
    else:
        opts.log(f"[train] {out} is already trained to iteration {done}: skipped")
        found = latest_checkpoint(out)
        assert found is not None
        checkpoint = found
    seconds["train"] = time.perf_counter() - t0
    opts.log(f"[train] {seconds['train']:.1f} s")

    t0 = time.perf_counter()
    tracking = load_tracking(prep.dataset / ".work" / "tracking.npz")
    images = [prep.dataset / "imgs" / f"{i:05d}.jpg" for i in range(tracking.frames)]
    preview = out / "preview.mp4"
    if preview.is_file() and preview.stat().st_mtime >= checkpoint.stat().st_mtime:
        opts.log(f"[preview] {preview} is newer than the checkpoint: skipped")
    else:
        write_preview(out / "avatar.toml", tracking, images, preview, device=device, max_frames=opts.preview_frames,
                      progress=lambda name, n: Progress(name, n))
    seconds["preview"] = time.perf_counter() - t0
    opts.log(f"[preview] {seconds['preview']:.1f} s")
    style = None
    if opts.style_checkpoint is not None:
        from drivers.avatar.flashavatar.create.style import write_style

        t0 = time.perf_counter()
        assert opts.style_stats is not None
        style = write_style(opts.style_checkpoint, opts.style_stats, tracking, out, device=device)
        seconds["style"] = time.perf_counter() - t0
        opts.log(f"[style] {seconds['style']:.1f} s")
    opts.log("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) +
             f"; total {sum(seconds.values()):.1f} s")
    return CreateResult(out, prep, out / "avatar.toml", checkpoint, preview, iterations, style, seconds)


def _trained_to(out: Path) -> int:
    """The iteration of the latest checkpoint in `out` (0 when none)."""
    from drivers.avatar.flashavatar.train.outputs import read_resume_state

    found = latest_checkpoint(out)
    if found is None:
        return 0
    return read_resume_state(found).checkpoint.iteration
