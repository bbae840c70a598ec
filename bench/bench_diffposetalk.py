"""Streaming DiffPoseTalk speed with a real-size model (HuBERT-base + the released denoiser's sizes, random
weights): per-hop compute, real-time factor and algorithmic latency for the exact DDPM sampler and the fast
DDIM one, plus whole-clip offline generation for comparison.

    python bench/bench_diffposetalk.py                  # CUDA when present
    python bench/bench_diffposetalk.py --device cpu --seconds 4 --ddpm-hops 1 --no-offline

Latency: a hop emitting frames i..i+hop-1 can start once the audio of frame i+hop+lookahead-1 has arrived, so
frame i's parameters come out (hop + lookahead) frames after its audio began (the algorithmic latency, "algo"),
plus the hop's compute ("+p95" adds the 95th-percentile hop). Real-time factor = compute time / audio time.
Targets with the fast sampler: RTF <= 0.1 and algorithmic latency <= 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drivers.face.diffposetalk.checkpoint import STATS_SIZES, ModelArgs  # noqa: E402
from drivers.face.diffposetalk.hubert import HubertSizes  # noqa: E402
from drivers.face.diffposetalk.model import DiffPoseTalkModel  # noqa: E402
from drivers.face.diffposetalk.offline import generate  # noqa: E402
from drivers.face.diffposetalk.sampler import SamplerOptions, torch_noise  # noqa: E402
from drivers.face.diffposetalk.streaming import StreamingEngine, StreamingOptions  # noqa: E402

FPS = 25
SR = 16000
TARGET_RTF = 0.1
TARGET_LATENCY_MS = 200.0


def real_size_args() -> ModelArgs:
    """The sizes of the released head-pose checkpoint (SA-hubert-WM): HuBERT-base front end, 8x8x512 denoiser."""
    hubert = HubertSizes(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, conv_dim=(512,) * 7,
                         conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), pos_conv_kernel=128,
                         pos_conv_groups=16)
    return ModelArgs(motion_dim=54, predict_head_pose=True, feature_dim=512, n_heads=8, n_layers=8, mlp_ratio=4,
                     n_motions=100, n_prev_motions=10, fps=FPS, n_diff_steps=500, diff_schedule="cosine",
                     target="sample", use_style=True, d_style=128, use_indicator=True, align_mask_width=1,
                     use_learnable_pe=True, guiding_conditions=("audio", "style"), cfg_mode="incremental",
                     pad_mode="zero", hubert=hubert)


def small_args() -> ModelArgs:
    """The real-size layout shrunk (2-layer HuBERT, 2x4x128 denoiser, 50 steps): quick GPU tests of the same code."""
    hubert = HubertSizes(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
                         conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), pos_conv_kernel=16,
                         pos_conv_groups=4)
    return replace(real_size_args(), feature_dim=128, n_layers=2, n_heads=4, n_diff_steps=50, hubert=hubert)


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-rate amplitude-modulated harmonics plus noise: enough to exercise the network like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    return (0.3 * env * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@dataclass
class StreamResult:
    hop_ms: list[float]
    frames: int
    audio_s: float
    hubert_ms: list[float]
    motion: torch.Tensor


class Timed:
    """Wraps the HuBERT front end of a hop (the graphed call, or the model's method when eager) to time it."""

    def __init__(self, inner: Callable[..., torch.Tensor], dev: torch.device) -> None:
        self.inner, self.dev = inner, dev
        self.ms: list[float] = []

    def __call__(self, *args: Any) -> torch.Tensor:
        sync(self.dev)
        t0 = time.perf_counter()
        out = self.inner(*args)
        sync(self.dev)
        self.ms.append((time.perf_counter() - t0) * 1000)
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_stream(model: DiffPoseTalkModel, audio: np.ndarray, sampler: SamplerOptions, opts: StreamingOptions,
               max_hops: int | None, chunk_ms: int = 20) -> StreamResult:
    """Feed the clip in `chunk_ms` pieces as a microphone would and time every hop (synchronised)."""
    dev = model.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    style = np.random.default_rng(1).standard_normal(model.args.d_style).astype(np.float32)
    engine = StreamingEngine(model, np.zeros(100, np.float32), style, torch_noise(gen, dev), sampler, opts)
    if engine.graphs is not None:
        timer = Timed(engine.graphs.features, dev)
        engine.graphs.features = timer  # type: ignore[assignment]
    else:
        timer = Timed(model.audio_features, dev)
        model.audio_features = timer  # type: ignore[method-assign,assignment]
    step = SR * chunk_ms // 1000
    hop_ms: list[float] = []
    outputs: list[torch.Tensor] = []
    frames = 0
    for start in range(0, audio.size, step):
        engine.feed(audio[start:start + step])
        while engine.ready():
            sync(dev)
            t0 = time.perf_counter()
            out = engine.step()
            sync(dev)
            hop_ms.append((time.perf_counter() - t0) * 1000)
            frames += out.shape[0]
            outputs.append(out)
            if max_hops is not None and len(hop_ms) >= max_hops:
                break
        if max_hops is not None and len(hop_ms) >= max_hops:
            break
    if "audio_features" in vars(model):
        del model.audio_features
    return StreamResult(hop_ms, frames, frames / FPS, timer.ms, torch.cat(outputs).float().cpu())


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the test clip")
    ap.add_argument("--ddim-steps", default="5,10,20", help="DDIM step counts to time")
    ap.add_argument("--hops", default="4:1,3:2,5:3", help="hop:lookahead frame pairs to time with the fast sampler")
    ap.add_argument("--ddpm-hops", type=int, default=3, help="hops to time with the exact 500-step sampler")
    ap.add_argument("--no-offline", action="store_true", help="skip the whole-clip timings")
    ap.add_argument("--no-graph", action="store_true", help="run the denoiser eagerly (no CUDA graph)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    model = DiffPoseTalkModel(real_size_args()).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"DiffPoseTalk streaming benchmark on {name}, torch {torch.__version__}")
    print(f"  real-size model: HuBERT-base (12 layers) + denoiser 8x8x512, 500 diffusion steps, "
          f"{n_params:.1f} M parameters (random weights), CFG over 3 conditions, clip {args.seconds:.0f} s")
    audio = speechlike(args.seconds)
    graph = not args.no_graph and device.type == "cuda"
    print(f"  CUDA graphs: {'HuBERT per hop + whole DDIM window / DDPM step' if graph else 'off (eager)'}")

    # warm-up (kernels, allocator)
    run_stream(model, audio[: SR * 4], SamplerOptions(kind="ddim", steps=5), StreamingOptions(5, 3, cuda_graph=graph), max_hops=3)

    print(f"{'sampler':<14}{'hop':>4}{'look':>5}{'hops':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'HuBERT':>8}"
          f"{'RTF':>8}{'algo ms':>9}{'+p95 ms':>9}  target")
    rows: list[tuple[str, int, int, StreamResult]] = []
    pairs = [tuple(int(v) for v in p.split(":")) for p in args.hops.split(",")]
    for steps in (int(s) for s in args.ddim_steps.split(",")):
        for hop, look in pairs:
            res = run_stream(model, audio, SamplerOptions(kind="ddim", steps=steps),
                             StreamingOptions(hop, look, cuda_graph=graph), None)
            rows.append((f"ddim {steps}", hop, look, res))
    if args.ddpm_hops > 0:
        res = run_stream(model, audio, SamplerOptions(kind="ddpm"), StreamingOptions(5, 3, cuda_graph=graph),
                         args.ddpm_hops)
        rows.append(("ddpm 500", 5, 3, res))
    for label, hop, look, res in rows:
        p50, p95 = statistics.median(res.hop_ms), pct(res.hop_ms, 0.95)
        rtf = sum(res.hop_ms) / 1000 / max(res.audio_s, 1e-9)
        algo = (hop + look) * 1000 / FPS
        ok = "ok" if rtf <= TARGET_RTF and algo <= TARGET_LATENCY_MS else "-"
        print(f"{label:<14}{hop:>4}{look:>5}{len(res.hop_ms):>6}{p50:>9.1f}{p95:>9.1f}{max(res.hop_ms):>9.1f}"
              f"{statistics.median(res.hubert_ms):>8.1f}{rtf:>8.3f}{algo:>9.0f}{algo + p95:>9.0f}  "
              f"{ok if label.startswith('ddim') else '(exact)'}")

    if device.type == "cuda":  # what TF32 changes: the same stream with and without it (normalised motion units)
        runs = []
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            runs.append(run_stream(model, audio[: SR * 6], SamplerOptions(kind="ddim", steps=5),
                                   StreamingOptions(4, 1, cuda_graph=graph), None).motion)
        diff = (runs[0] - runs[1]).abs()
        print(f"TF32 vs FP32 on the same 6 s stream: max |diff| {float(diff.max()):.2e}, mean {float(diff.mean()):.2e}, "
              f"motion std {float(runs[0].std()):.2f} (normalised units)")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.no_offline:
        return 0
    gen = torch.Generator(device="cpu").manual_seed(0)
    clip = audio[: SR * 8]
    style = np.random.default_rng(1).standard_normal(model.args.d_style).astype(np.float32)
    stats = {f"{k}_{kind}": np.full(n, 0.0 if kind == "mean" else 1.0, np.float32)
             for k, n in STATS_SIZES.items() for kind in ("mean", "std")}
    for opts in (SamplerOptions(kind="ddim", steps=10), SamplerOptions(kind="ddpm")):
        sync(device)
        t0 = time.perf_counter()
        generate(model, clip, np.zeros(100, np.float32), style, stats, torch_noise(gen, device), opts)
        sync(device)
        dt = time.perf_counter() - t0
        label = f"{opts.kind} {opts.steps or 500}"
        print(f"offline whole clip ({clip.size / SR:.0f} s), {label}: {dt * 1000:.0f} ms, "
              f"RTF {dt / (clip.size / SR):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
