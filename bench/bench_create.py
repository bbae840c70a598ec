"""Time every stage of `avatar create` (or `avatar prepare` alone) on a generated phone-like clip or a given video.

    # CPU (2 cores): prepare of a 25-second clip, the goal is <= 10 minutes
    python bench/bench_create.py --seconds 25 --prepare-only --device cpu
    # GPU: create of a 2-minute clip with a usable schedule, the goal is <= 15 minutes end to end
    python bench/bench_create.py --seconds 120 --iterations 15000 --device cuda

The generated clip is 1920x1080 at 30 fps (resampled to 25 by the pipeline): scikit-image's astronaut photo moving,
turning a little and coming nearer, on a plain wall. Without --flame-model the stand-in FLAME of
`synthetic_flame` (built on FlashAvatar's FlameMesh.obj) is used with the test FLAME files in
../shared/golden/flashavatar; give the real FLAME 2020 files for figures on a real model. Prints each stage's seconds, the face-mesh detection rate and ms/frame.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOLDEN = ROOT.parent / "shared" / "golden" / "flashavatar"


def phone_frame(i: int, photo: np.ndarray, width: int = 1920, height: int = 1080) -> np.ndarray:
    """Frame i of the generated clip: the photo at a slowly changing place, size and angle."""
    import cv2

    t = i / 30.0
    size = 700 + 120 * np.sin(t * 0.3)
    angle = 8 * np.sin(t * 0.7)
    cx, cy = width / 2 + 200 * np.sin(t * 0.4), height / 2 + 40 * np.cos(t * 0.5)
    m = cv2.getRotationMatrix2D((256.0, 256.0), angle, size / 512.0)
    m[:, 2] += (cx - 256.0, cy - 256.0)
    return cv2.warpAffine(photo, m, (width, height), borderMode=cv2.BORDER_CONSTANT, borderValue=(150, 140, 130))


def write_phone_clip(path: Path, seconds: float) -> Path:
    import av
    from skimage import data

    photo = np.asarray(data.astronaut(), np.uint8)
    n = int(seconds * 30)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"crf": "20", "preset": "ultrafast"}
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(phone_frame(i, photo), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, help="a real video instead of the generated clip")
    ap.add_argument("--seconds", type=float, default=25.0, help="length of the generated clip")
    ap.add_argument("--prepare-only", action="store_true", help="time `avatar prepare` only")
    ap.add_argument("--iterations", type=int, help="training iterations (create's default for the device if not)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--out", type=Path, help="keep the outputs here (default: a temporary folder)")
    ap.add_argument("--flame-model", type=Path, help="FLAME generic_model.pkl (default: the stand-in FLAME)")
    ap.add_argument("--flame-masks", type=Path, default=GOLDEN / "FLAME_masks_synthetic.pkl")
    ap.add_argument("--flame-mesh", type=Path, default=GOLDEN / "FlameMesh.obj")
    ap.add_argument("--eyelids-dir", type=Path, default=GOLDEN)
    args = ap.parse_args()

    from bridge.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "out"
        out.mkdir(parents=True, exist_ok=True)
        video = args.video
        if video is None:
            t0 = time.perf_counter()
            video = write_phone_clip(out / "clip.mp4", args.seconds)
            print(f"generated {video} ({args.seconds:.0f} s, 1920x1080 at 30 fps) in {time.perf_counter() - t0:.1f} s")
        model = args.flame_model
        if model is None:
            from drivers.avatar.flashavatar.create.synthetic_flame import build_synthetic_flame

            model = out / "flame_standin.npz"
            np.savez(model, **build_synthetic_flame(args.flame_mesh))
        flame = ["--flame-model", str(model), "--flame-masks", str(args.flame_masks),
                 "--flame-mesh", str(args.flame_mesh), "--eyelids-dir", str(args.eyelids_dir),
                 "--device", args.device]
        t0 = time.perf_counter()
        if args.prepare_only:
            rc = cli(["avatar", "prepare", str(video), "--out", str(out / "dataset"), *flame])
        else:
            extra = ["--iterations", str(args.iterations)] if args.iterations else []
            rc = cli(["avatar", "create", str(video), "--out", str(out / "avatar"), *flame, *extra, "--no-progress"])
        total = time.perf_counter() - t0
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else \
            f"CPU ({torch.get_num_threads()} threads)"
        print(f"{'prepare' if args.prepare_only else 'create'} finished with exit code {rc} in {total:.1f} s "
              f"({total / 60:.1f} min) on {device}")
        return rc


if __name__ == "__main__":
    sys.exit(main())
