"""How close streaming DiffPoseTalk is to upstream's offline generation on the same checkpoint and noise.

With the whole clip as lookahead, streaming must reproduce offline (exact DDPM, recorded noise: error ~0).
With a short lookahead the model sees less future audio and shorter windows, so the motion departs from the
offline result; this prints by how much (normalised motion units, next to the motion's own spread), for the
configured default and a few neighbours, with the deterministic DDIM sampler and one fixed initial noise.

    python bench/streaming_vs_offline.py [--golden DIR] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drivers.face.diffposetalk.checkpoint import load_checkpoint, load_stats  # noqa: E402
from drivers.face.diffposetalk.model import DiffPoseTalkModel  # noqa: E402
from drivers.face.diffposetalk.offline import generate, normalise_shape  # noqa: E402
from drivers.face.diffposetalk.sampler import NoiseFn, SamplerOptions, fixed_noise, recorded_noise  # noqa: E402
from drivers.face.diffposetalk.streaming import StreamingEngine, StreamingOptions  # noqa: E402

DEFAULT_GOLDEN = Path(os.environ.get("AVATAR_BRIDGE_GOLDEN_DPT", REPO.parent / "shared" / "golden" / "diffposetalk"))
CFG = (1.15, 3.0)
FULL = StreamingOptions(hop_frames=100, lookahead_frames=10**6, audio_context_s=1e9)


def row(label: str, got: np.ndarray, want: np.ndarray) -> None:
    err = np.abs(got - want)
    per_frame = err.mean(axis=1)
    print(f"{label:<38} {err.mean():>9.2e} {np.percentile(per_frame, 95):>9.2e} {err.max():>9.2e} "
          f"{float(np.abs(got[:, -6:] - want[:, -6:]).mean()):>9.2e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    ap.add_argument("--variant", choices=("head", "nohead"), default="head")
    ap.add_argument("--steps", type=int, default=5, help="DDIM steps (the configured default is 5)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    model = DiffPoseTalkModel.from_checkpoint(load_checkpoint(args.golden / f"dpt_tiny_{args.variant}.pt"))
    stats = load_stats(args.golden / f"stats_{args.variant}.npz")
    with np.load(args.golden / f"golden_{args.variant}.npz") as z:
        g = {k: z[k] for k in z.files}
    shape = (1, model.args.n_motions, model.args.motion_dim)
    shape_norm = normalise_shape(g["shape"], stats)

    def stream(noise: NoiseFn, sampler: SamplerOptions, opts: StreamingOptions) -> np.ndarray:
        """The clip fed in 40 ms chunks, as a microphone would."""
        return StreamingEngine(model, shape_norm, g["style"], noise, sampler, opts).stream(g["audio"], 640).numpy()

    print(f"golden checkpoint ({args.variant}), {len(g['audio']) / 16000:.1f} s clip, {g['motion'].shape[0]} frames; "
          f"motion std {g['motion'].std():.3f} (normalised units)")
    print(f"{'streaming setting':<38} {'mean|e|':>9} {'p95 frame':>9} {'max|e|':>9} {'pose|e|':>9}")
    exact = stream(recorded_noise(torch.from_numpy(g["noise"])),
                   SamplerOptions(kind="ddpm", cfg_scale=CFG), FULL)
    row("ddpm 500, whole clip lookahead", exact, g["motion"])
    ddim = SamplerOptions(kind="ddim", steps=args.steps, cfg_scale=CFG)
    offline = generate(model, g["audio"], g["shape"], g["style"], stats, fixed_noise(0, shape), ddim).motion
    row(f"ddim {args.steps}, whole clip lookahead", stream(fixed_noise(0, shape), ddim, FULL), offline)
    for hop, look in ((4, 1), (3, 2), (5, 3), (10, 5)):
        opts = StreamingOptions(hop_frames=hop, lookahead_frames=look, audio_context_s=2.0)
        label = f"ddim {args.steps}, hop {hop}, lookahead {look}" + (" (default)" if (hop, look) == (4, 1) else "")
        row(label, stream(fixed_noise(0, shape), ddim, opts), offline)
    print("errors against offline generation with the same sampler and initial noise (the first row: against "
          "upstream's recorded output); pose = the last 6 motion channels (jaw and head)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
