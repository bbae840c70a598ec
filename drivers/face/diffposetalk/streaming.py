"""Low-latency streaming DiffPoseTalk: 16 kHz chunks in, one FaceParams per 25 fps frame out.

Each hop generates one model window whose first K = hop + lookahead positions are real frames (the rest is
zero audio with indicator 0, the truncated-window case the model was trained on). The first `hop` frames are
emitted; the `lookahead` ones are kept as predictions and cross-faded into the next hop's first frames, so hops
join smoothly. The last 10 emitted frames (and their audio features) are the next hop's motion condition,
exactly as upstream carries windows over. HuBERT sees `audio_context_s` of past audio, the hop, the lookahead
and zeros up to the window end; audio is z-scored with running statistics over everything received so far.
The initial noise x_T is drawn once and reused for every hop (as upstream reuses it across windows).

With hop = 100, lookahead ≥ the clip and unlimited context, the hops are upstream's windows and the output
equals whole-clip generation (same noise): see tests/face/test_diffposetalk_streaming.py.

`StreamingEngine` is the synchronous core; `DiffPoseTalkFaceDriver` runs it on its own thread so `push()`
returns at once with whatever frames are ready. A driver made with a model cache (as `from_config` makes it)
shares the model with every other session on the same checkpoint, and hands each hop's model work to the
model's `batching.HopBatcher`, which runs the hops of the sessions due together as one forward.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk, Avatar
from bridge.core.models import ModelCache, process_models
from drivers.cuda_streams import realtime_stream
from drivers.face.diffposetalk.batching import HopBatcher
from drivers.face.diffposetalk.checkpoint import load_checkpoint, load_shape, load_stats, load_style
from drivers.face.diffposetalk.hops import HopGraphs, HopInput, HopRunner, run_hops
from drivers.face.diffposetalk.mapping import OutputMapping, denormalise
from drivers.face.diffposetalk.model import DiffPoseTalkModel
from drivers.face.diffposetalk.offline import normalise_shape
from drivers.face.diffposetalk.sampler import NoiseFn, SamplerOptions, torch_noise


class FaceDriverSetupError(UserError, ValueError):
    """The [face.diffposetalk] settings cannot work as given; the message names the setting and the fix."""


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamingOptions:
    hop_frames: int = 5
    lookahead_frames: int = 3
    audio_context_s: float = 2.0
    crossfade: bool = True
    cuda_graph: bool = True  # replay the denoiser as a CUDA graph when the model is on a GPU


class RunningNorm:
    """Mean and unbiased std of every sample consumed so far (float64 sums): the streaming stand-in for
    upstream's whole-clip z-score, equal to it once the whole clip has been consumed."""

    def __init__(self) -> None:
        self.n = 0
        self.s1 = 0.0
        self.s2 = 0.0

    def update(self, x: NDArray[np.float32]) -> None:
        x64 = x.astype(np.float64)
        self.n += x64.size
        self.s1 += float(x64.sum())
        self.s2 += float((x64 * x64).sum())

    def stats(self) -> tuple[float, float]:
        if self.n < 2:
            return 0.0, 1.0
        mean = self.s1 / self.n
        var = max(self.s2 - self.n * mean * mean, 0.0) / (self.n - 1)
        return mean, math.sqrt(var)


FIXED_CONTEXT_LIMIT = 60.0  # seconds; longer contexts (tests of offline equality) keep the variable-length path


class StreamingEngine:
    """Hop-by-hop generation in normalised motion units. Not thread-safe: one caller at a time."""

    def __init__(self, model: DiffPoseTalkModel, shape_norm: NDArray[np.float32], style: NDArray[np.float32] | None,
                 noise: NoiseFn, sampler: SamplerOptions, options: StreamingOptions,
                 graphs: HopGraphs | None = None) -> None:
        a = model.args
        if options.hop_frames < 1 or options.hop_frames > a.n_motions:
            raise FaceDriverSetupError(f"face.diffposetalk.hop_frames must be in [1, {a.n_motions}] for this "
                                       "checkpoint (its window length)")
        if options.lookahead_frames < 0:
            raise FaceDriverSetupError("face.diffposetalk.lookahead_frames must be >= 0")
        self.model, self.sampler, self.opt, self.noise = model, sampler, options, noise
        self.spf = a.samples_per_frame
        dev = model.device
        self.shape = torch.as_tensor(shape_norm, device=dev).reshape(1, -1)
        self.style = None if style is None else torch.as_tensor(style, device=dev).reshape(1, -1)
        self.context = int(min(options.audio_context_s, 1e6) * SAMPLE_RATE) // self.spf * self.spf
        self.audio = np.zeros(0, np.float32)
        self.origin = 0  # absolute sample index of self.audio[0]
        self.received = 0
        self.norm = RunningNorm()
        self.norm_end = 0  # absolute sample index up to which `norm` has seen audio
        self.next_frame = 0
        self.prev_motion = model.start_motion_feat.detach().clone()
        self.prev_audio = model.start_audio_feat.detach().clone()
        self.pending: torch.Tensor | None = None  # lookahead predictions for frames next_frame...
        self.x_T: torch.Tensor | None = None
        if graphs is None and options.cuda_graph and dev.type == "cuda":
            graphs = HopGraphs(model)
        self.graphs = graphs  # shared between the engines of one driver, so graphs are captured once

    def feed(self, samples: NDArray[np.floating]) -> None:
        x = np.asarray(samples, np.float32).reshape(-1)
        if x.size:
            self.audio = np.concatenate([self.audio, x])
            self.received += x.size

    def frames_available(self) -> int:
        return self.received // self.spf - self.next_frame

    def ready(self) -> bool:
        return self.frames_available() >= self.opt.hop_frames + self.opt.lookahead_frames

    @torch.no_grad()
    def step(self, final: bool = False, run: HopRunner | None = None) -> torch.Tensor:
        """Generate one hop; returns the emitted frames (n, D) (empty when nothing can be emitted). `run` does
        the model work (default: alone, now); a batching runner may run it with other engines' hops."""
        hop = self.prepare(final)
        if hop is None:
            return torch.zeros(0, self.model.args.motion_dim, device=self.model.device)
        x0, window_feat = (run or self.run_alone)(hop)
        return self.complete(hop, x0, window_feat)

    def run_alone(self, hop: HopInput) -> tuple[torch.Tensor, torch.Tensor]:
        return run_hops(self.model, [hop], self.graphs)[0]

    def prepare(self, final: bool = False) -> HopInput | None:
        """The model inputs of the next hop, or None when nothing can be emitted yet. Changes nothing but the
        running audio statistics (which depend only on the audio), so an engine may prepare, hand the hop to
        a batch, and `complete` it with the batch's row."""
        a = self.model.args
        dev = self.model.device
        avail = self.frames_available()
        if avail <= 0 or (not final and not self.ready()):
            return None
        k = min(self.opt.hop_frames + self.opt.lookahead_frames, a.n_motions, avail)
        emit = min(self.opt.hop_frames, k)
        s0 = self.next_frame * self.spf
        win = a.window_samples
        real_end = min(self.received, (self.next_frame + self.opt.hop_frames + self.opt.lookahead_frames) * self.spf)
        end = max(s0 + win, -(-real_end // win) * win)
        # With a bounded context every hop's HuBERT input has one length (context + window, silence before the
        # stream began), so its CUDA graph is reused; with an unbounded one it is all audio so far.
        fixed = self.context <= FIXED_CONTEXT_LIMIT * SAMPLE_RATE and end == s0 + win
        ctx_start = s0 - self.context if fixed else max(self.origin, s0 - self.context)
        if real_end > self.norm_end:  # statistics of the audio this hop may use, independent of chunking
            self.norm.update(self.audio[self.norm_end - self.origin: real_end - self.origin])
            self.norm_end = real_end
        mean, std = self.norm.stats()
        have = max(ctx_start, self.origin)
        seg = (self.audio[have - self.origin: real_end - self.origin] - mean) / (std + 1e-5)
        pad_value = 0.0 if a.pad_mode == "zero" or seg.size == 0 else float(seg[-1])
        wav = np.full(end - ctx_start, pad_value, np.float32)
        wav[: have - ctx_start] = 0.0
        wav[have - ctx_start: have - ctx_start + seg.size] = seg
        indicator = None
        if a.use_indicator:
            indicator = torch.zeros(1, a.n_motions, device=dev)
            indicator[:, :k] = 1
        if self.x_T is None:  # drawn as sample_window would draw it, so graphs change no random stream
            self.x_T = self.noise((1, a.n_motions, a.motion_dim)).to(dev)
        return HopInput(wav=torch.as_tensor(wav, device=dev).unsqueeze(0), feature_offset=(s0 - ctx_start) // self.spf,
                        fixed=fixed, shape=self.shape, style=self.style, prev_motion=self.prev_motion,
                        prev_audio=self.prev_audio, x_T=self.x_T, indicator=indicator, sampler=self.sampler,
                        noise=self.noise, k=k, emit=emit)

    def complete(self, hop: HopInput, x0: torch.Tensor, window_feat: torch.Tensor) -> torch.Tensor:
        """Take the hop's result (its window (1, n, D) and audio features (1, n, F)) into the engine's state:
        cross-fade, carry the motion condition over, advance; returns the emitted frames (emit, D)."""
        a = self.model.args
        emit, k = hop.emit, hop.k
        out = x0[0, :emit].clone()
        if self.opt.crossfade and self.pending is not None and self.pending.shape[0] > 0:
            n = min(self.pending.shape[0], emit)
            w = torch.arange(1, n + 1, device=out.device, dtype=out.dtype).unsqueeze(1) / (self.pending.shape[0] + 1)
            out[:n] = (1 - w) * self.pending[:n] + w * out[:n]
        self.pending = x0[0, emit:k].clone()
        p = a.n_prev_motions
        self.prev_motion = torch.cat([self.prev_motion, out.unsqueeze(0)], dim=1)[:, -p:]
        self.prev_audio = torch.cat([self.prev_audio, window_feat[:, :emit]], dim=1)[:, -p:]
        self.next_frame += emit
        keep_from = max(0, self.next_frame * self.spf - self.context - self.spf)
        if keep_from > self.origin:
            self.audio = self.audio[keep_from - self.origin:]
            self.origin = keep_from
        return out

    def finish(self) -> list[torch.Tensor]:
        """Audio ended: emit every remaining whole frame."""
        out = []
        while self.frames_available() > 0:
            out.append(self.step(final=True))
        return out

    def stream(self, audio: NDArray[np.floating], chunk: int) -> torch.Tensor:
        """A whole clip fed `chunk` samples at a time, as a microphone would, then finished: every frame (n, D)."""
        out = []
        for start in range(0, len(audio), chunk):
            self.feed(audio[start:start + chunk])
            while self.ready():
                out.append(self.step())
        out += self.finish()
        return torch.cat(out)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FaceDriverSetupError("face.diffposetalk.device is 'cuda' but no CUDA device is available; "
                                   "use 'auto' or 'cpu'")
    return torch.device(name)


def _load_model(checkpoint: str | Path, device: torch.device, models: ModelCache | None, gpu_priority: bool
                ) -> tuple[DiffPoseTalkModel, HopBatcher | None]:
    """The model (HuBERT and the denoiser) and, with `models`, the batcher of its hops: both loaded once per
    process for the same file and device."""
    def load() -> DiffPoseTalkModel:
        return DiffPoseTalkModel.from_checkpoint(load_checkpoint(checkpoint), device)

    if models is None:
        return load(), None
    model = models.get(models.key("diffposetalk", [checkpoint], str(device)), load)
    hops = models.get(models.key("diffposetalk-hops", [checkpoint], str(device), gpu_priority),
                      lambda: HopBatcher(model, priority=gpu_priority))
    return model, hops


class DiffPoseTalkFaceDriver:
    """The FaceDriver: model work on a worker thread; push() never waits for the model."""

    name = "diffposetalk"

    def __init__(self, checkpoint: str | Path | None = None, stats: str | Path | None = None,
                 style: str | Path | None = None, shape: str | Path | None = None, sampler: str = "ddim",
                 steps: int = 5, hop_frames: int = 3, lookahead_frames: int = 1, audio_context_s: float = 2.0,
                 cfg_audio: float = 1.15, cfg_style: float = 3.0, seed: int = 0, device: str = "auto", tf32: bool = True,
                 fps: int = 25, model: DiffPoseTalkModel | None = None, mapping: OutputMapping | None = None,
                 models: ModelCache | None = None, gpu_priority: bool = True) -> None:
        # Settings first, then the small files, then the model: a mistake is reported before a long load.
        if model is None and checkpoint is None:
            raise FaceDriverSetupError("face.driver = 'diffposetalk' needs face.diffposetalk.checkpoint (an iter_*.pt "
                                       "file) and face.diffposetalk.stats (stats_train.npz); see install/models.md")
        if stats is None:
            raise FaceDriverSetupError("face.diffposetalk.stats is not set: point it at the stats_train.npz of the "
                                       "checkpoint")
        if sampler not in ("ddpm", "ddim"):
            raise FaceDriverSetupError(f"face.diffposetalk.sampler must be 'ddpm' or 'ddim', not {sampler!r}")
        self.stats = load_stats(stats)
        self._hops: HopBatcher | None = None
        if model is None:
            assert checkpoint is not None
            model, self._hops = _load_model(checkpoint, _device(device), models, gpu_priority)
        a = model.args
        if tf32 and model.device.type == "cuda":  # process-wide; the avatar's fp16/fp32 paths are unaffected by it
            torch.backends.cuda.matmul.allow_tf32 = True
        if fps != a.fps:
            raise FaceDriverSetupError(f"DiffPoseTalk generates {a.fps} fps but the video runs at {fps}; "
                                       f"set video.fps = {a.fps}")
        self.fps = fps
        self.model = model
        self.style = load_style(style, a.d_style) if style is not None else None
        raw_shape = load_shape(shape) if shape is not None else np.zeros(100, np.float32)
        self.shape_norm = normalise_shape(raw_shape, self.stats)
        conds = tuple(c for c in a.guiding_conditions if c != "style" or self.style is not None)
        scales = tuple(cfg_audio if c == "audio" else cfg_style for c in conds)
        self.sampler = SamplerOptions(kind=sampler, steps=steps, cfg_cond=conds, cfg_scale=scales)
        # With a batcher the graphs are the batcher's, shared by every driver of the model.
        self.options = StreamingOptions(hop_frames, lookahead_frames, audio_context_s, cuda_graph=self._hops is None)
        self.seed = seed
        self.mapping = mapping or OutputMapping()
        self._lock = threading.Condition()
        self._inbox: deque[NDArray[np.float32] | None] = deque()
        self._outbox: list[FaceParams] = []
        self._error: BaseException | None = None
        self._busy = False
        self._stop = False
        self._generation = 0
        self.start_pts = 0.0
        self._expected_pts: float | None = None
        self._graphs: HopGraphs | None = None
        # The model's GPU work has a stream of its own, so the avatar's frames (on theirs) never queue behind a
        # hop: both run at once, and each waits only for its own work. High priority: see drivers.cuda_streams.
        self._cuda_stream = realtime_stream(model.device, gpu_priority) if model.device.type == "cuda" else None
        self.first_hops: list[tuple[float, float]] = []
        """(time.monotonic() it began, seconds it took) of the stream's first hops, the slow ones if any."""
        self._engine = self._new_engine()
        if self._hops is not None:
            self._hops.join()
        if model.device.type == "cuda":
            self._warm_up()
        self._thread = threading.Thread(target=self._run, name="diffposetalk", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------------------------------- protocol

    @classmethod
    def from_config(cls, config: Config, *, avatar: Avatar | None = None,
                    models: ModelCache | None = None) -> DiffPoseTalkFaceDriver:
        """The [face.diffposetalk] section at the video's frame rate. The model predicts FLAME parameters, which
        every avatar takes, so `avatar` is not needed. The model and its hop batcher come from `models` (default:
        the process's cache), so the drivers of every session on one checkpoint share them."""
        return cls(**config.face.diffposetalk.model_dump(), fps=config.video.fps, models=models or process_models(),
                   gpu_priority=config.pipeline.gpu_priority)

    @property
    def hop_batcher(self) -> HopBatcher | None:
        """The batcher this driver's hops run in (shared with every driver of its model), if any."""
        return self._hops

    @property
    def latency(self) -> float:
        return (self.options.hop_frames + self.options.lookahead_frames) / self.fps

    def reset(self, start_pts: float) -> None:
        with self._lock:
            self._generation += 1
            self._inbox.clear()
            self._lock.wait_for(lambda: not self._busy)
            self._outbox.clear()
            self._engine = self._new_engine()
            self.start_pts = start_pts
            self.first_hops = []
            self._expected_pts = None

    def push(self, chunk: AudioChunk) -> list[FaceParams]:
        if chunk.sample_rate != SAMPLE_RATE:
            raise ValueError(f"DiffPoseTalk needs {SAMPLE_RATE} Hz audio, got {chunk.sample_rate} Hz")
        samples = np.asarray(chunk.samples, np.float32).reshape(-1)
        with self._lock:
            self._raise_error()
            if self._expected_pts is None:
                if chunk.pts > self.start_pts:  # the stream began before this chunk: silence for the gap
                    samples = np.concatenate([np.zeros(round((chunk.pts - self.start_pts) * SAMPLE_RATE), np.float32),
                                              samples])
            else:
                gap = round((chunk.pts - self._expected_pts) * SAMPLE_RATE)
                if gap > SAMPLE_RATE // self.fps:  # lost audio: fill with silence to keep frames on the clock
                    samples = np.concatenate([np.zeros(gap, np.float32), samples])
                elif gap < -(SAMPLE_RATE // self.fps):  # overlap: drop what was already received
                    samples = samples[min(-gap, samples.size):]
            self._expected_pts = chunk.end_pts
            if samples.size:
                self._inbox.append(samples)
                self._lock.notify_all()
            return self._take()

    def flush(self) -> list[FaceParams]:
        with self._lock:
            self._inbox.append(None)
            self._lock.notify_all()
            self._lock.wait_for(lambda: (not self._inbox and not self._busy) or self._error is not None)
            self._raise_error()
            return self._take()

    def close(self) -> None:
        with self._lock:
            if self._stop:
                return
            self._stop = True
            self._lock.notify_all()
        self._thread.join(timeout=5)
        if self._hops is not None:
            self._hops.leave()

    # --------------------------------------------------------------------------------------- internals
    def _new_engine(self) -> StreamingEngine:
        dev = self.model.device
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        engine = StreamingEngine(self.model, self.shape_norm, self.style, torch_noise(gen, dev), self.sampler,
                                 self.options, graphs=self._graphs)
        self._graphs = engine.graphs  # every engine of this driver replays the graphs the first one captured
        return engine

    def _warm_up(self) -> None:
        """Generate a few hops of silence before the stream starts, on an engine sharing this driver's graphs: the
        first hop and the steady ones have different inputs, and capturing their CUDA graphs takes several hops'
        time, which must not fall on the first frames of a live stream."""
        engine = self._new_engine()
        hop = self.options.hop_frames + self.options.lookahead_frames
        engine.feed(np.zeros(3 * hop * engine.spf, np.float32))
        with self._on_own_stream():
            if self._hops is not None:
                first = engine.prepare()
                assert first is not None
                self._hops.warm(first)  # the batcher's graphs for every batch size the sessions can make
            while engine.ready():
                engine.step(run=self._runner(time.monotonic()))
        torch.cuda.synchronize(self.model.device)

    def _runner(self, began: float) -> HopRunner | None:
        """How a hop that fell due at `began` runs: in the shared batcher, due within a frame period (a hop
        later than that makes its first frame late), or alone on this thread."""
        if self._hops is None:
            return None
        return partial(self._hops.run, deadline=began + 1.0 / self.fps)

    def _on_own_stream(self) -> contextlib.AbstractContextManager[object]:
        """The model's stream as the current one, after the work queued so far on the caller's (a new engine's
        tensors); a no-op on the CPU."""
        if self._cuda_stream is None:
            return contextlib.nullcontext()
        self._cuda_stream.wait_stream(torch.cuda.current_stream(self.model.device))
        return torch.cuda.stream(self._cuda_stream)

    def _take(self) -> list[FaceParams]:
        out, self._outbox = self._outbox, []
        return out

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"DiffPoseTalk generation failed: {err}") from err

    def _frames(self, motion: torch.Tensor, first_index: int) -> list[FaceParams]:
        if motion.shape[0] == 0:
            return []
        exp, pose = denormalise(motion.float().cpu().numpy(), self.stats, self.model.args.predict_head_pose)
        out = []
        for i in range(exp.shape[0]):
            t = self.start_pts + (first_index + i) / self.fps
            out.append(self.mapping.to_face_params(exp[i], pose[i], pts=t, audio_time=t))
        return out

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._stop or bool(self._inbox))
                if self._stop:
                    return
                item = self._inbox.popleft()
                self._busy = True
                engine, generation = self._engine, self._generation
            try:
                made: list[FaceParams] = []
                with self._on_own_stream():
                    if item is None:
                        for motion in engine.finish():
                            made += self._frames(motion, engine.next_frame - motion.shape[0])
                    else:
                        engine.feed(item)
                        while engine.ready():
                            with self._lock:
                                if generation != self._generation or self._stop:
                                    break
                            began = time.monotonic()
                            motion = engine.step(run=self._runner(began))
                            made += self._frames(motion, engine.next_frame - motion.shape[0])
                            if len(self.first_hops) < 8:
                                self.first_hops.append((began, time.monotonic() - began))
                with self._lock:
                    if generation == self._generation:
                        self._outbox.extend(made)
            except Exception as exc:  # surfaced to the caller on its next push/flush
                log.exception("DiffPoseTalk generation failed")
                with self._lock:
                    self._error = exc
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()
