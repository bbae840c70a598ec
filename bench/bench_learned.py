"""What tracking costs the learned avatar: the same video trained twice, once on `avatar prepare`'s fitted tracking
and once on the true tracking, and the held-out PSNR of each.

    # CPU (2 cores, a few minutes): a 3-second clip, 64² training, a small MLP, 200 iterations
    python bench/bench_learned.py
    # GPU: a 60-second clip, upstream's MLP at 512², 15k iterations
    python bench/bench_learned.py --seconds 60 --iterations 15000 --device cuda

The ground-truth video of `create/synthetic_video` (the stand-in FLAME wearing the astronaut photo, turning,
talking, looking around) is written as an mp4 with its truth. Dataset A is `avatar prepare` of that mp4: crops,
alpha, parsing masks, face-mesh landmarks and the fitted FLAME tracking. Dataset B is A's images and masks with
the true tracking written as `.frame` files instead (the truth's FLAME parameters; the camera re-expressed in
A's crops under one shared K, as the `.frame` format holds one K: a PnP of the true vertices' crop projections,
whose residual is printed). Both are trained with the same schedule and seed; held-out PSNR is the trainer's
(the same last frames of both, against the video's own crops composited with the same masks). The gap B - A is
what tracking costs.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN

from bridge.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from drivers.avatar.flame.model import FlameModel
from drivers.avatar.flashavatar.create.crop import SIZE
from drivers.avatar.flashavatar.create.frame_files import write_frames
from drivers.avatar.flashavatar.create.prepare import PrepareOptions, load_tracking, prepare
from drivers.avatar.flashavatar.create.synthetic_flame import build_synthetic_flame
from drivers.avatar.flashavatar.create.synthetic_video import FPS, astronaut_texture, make_video, write_video
from drivers.avatar.flashavatar.create.tracking import TrackingResult
from drivers.avatar.flashavatar.train.dataset import FRAME_OFFSET
from drivers.avatar.flashavatar.train.outputs import SubjectFilePaths
from drivers.avatar.flashavatar.train.trainer import Trainer, TrainOptions, TrainResult
from drivers.avatar.scene.torso_source import read_crops


def crop_boxes(dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """crops.csv in image order: each image's source time (s) and square box (x0, y0, x1, y1) in video pixels."""
    crops = read_crops(dataset / "crops.csv")
    rows = [crops[str(i)] for i in range(len(crops))]
    return np.array([c.time_s for c in rows]), np.array([c.box for c in rows])


def true_tracking(truth: dict[str, np.ndarray], flame: FlameModel, times: np.ndarray, boxes: np.ndarray,
                  tracked: np.ndarray) -> tuple[TrackingResult, np.ndarray, float]:
    """The truth of each cropped image as a tracking result in crop pixels (one K, as the tracker has), the true
    vertices' crop projections (F,V,2) and the median residual (px) of re-expressing the cameras under that K."""
    import cv2

    src = np.clip(np.round(times * FPS).astype(int), 0, len(truth["R"]) - 1)
    scale = SIZE / (boxes[:, 2] - boxes[:, 0])
    # crop pixels = (video pixels - box corner) * scale (crop.crop's warp, pixel centres at integers)
    px = (truth["vertices_px"][src] - boxes[:, None, :2]) * scale[:, None, None]
    focal = float(np.median(scale) * truth["K"][0, 0])
    K = np.array([[focal, 0, SIZE / 2], [0, focal, SIZE / 2], [0, 0, 1]])
    with torch.no_grad():
        n = len(src)
        local = flame(shape=torch.as_tensor(truth["shape"], dtype=torch.float32)[None].expand(n, -1),
                      expression=torch.as_tensor(truth["expression"][src]), jaw=torch.as_tensor(truth["jaw"][src]),
                      eyes=torch.as_tensor(truth["eyes"][src]),
                      eyelids=torch.as_tensor(truth["eyelids"][src])).numpy().astype(np.float64)
    R = np.zeros((n, 3, 3))
    t = np.zeros((n, 3))
    residual = np.zeros(n)
    for i, k in enumerate(src):
        rvec = matrix_to_axis_angle(truth["R"][k].astype(np.float64))
        tvec = truth["t"][k].astype(np.float64)
        ok, rvec, tvec = cv2.solvePnP(local[i], px[i].astype(np.float64), K, None, rvec.reshape(3, 1),
                                      tvec.reshape(3, 1), useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            raise RuntimeError(f"PnP failed on image {i}")
        R[i], t[i] = axis_angle_to_matrix(rvec.ravel()), tvec.ravel()
        cam = local[i] @ R[i].T + t[i]
        residual[i] = np.median(np.linalg.norm(cam[:, :2] / cam[:, 2:3] * focal + SIZE / 2 - px[i], axis=1))
    f32 = np.float32
    result = TrackingResult(
        shape=truth["shape"].astype(f32), expression=truth["expression"][src].astype(f32),
        jaw=truth["jaw"][src].astype(f32), eyes=truth["eyes"][src].astype(f32),
        eyelids=truth["eyelids"][src].astype(f32), R=R.astype(f32), t=t.astype(f32), K=K.astype(f32),
        image_size=SIZE, landmark_error_px=np.zeros(n, f32), valid=tracked.copy())
    return result, px, float(np.median(residual))


def dataset_from_truth(a: Path, b: Path, truth: dict[str, np.ndarray], flame: FlameModel
                       ) -> tuple[np.ndarray, float]:
    """B: A's images, alpha and masks, with the true tracking for exactly the images A has a `.frame` for.
    Returns the true vertices' crop projections and the camera residual."""
    for sub in ("imgs", "alpha", "parsing"):
        shutil.copytree(a / sub, b / sub)
    shutil.copy2(a / "crops.csv", b / "crops.csv")
    times, boxes = crop_boxes(a)
    tracked = np.array([(a / "checkpoint" / f"{i - FRAME_OFFSET:05d}.frame").is_file() for i in range(len(times))])
    result, px, residual = true_tracking(truth, flame, times, boxes, tracked)
    write_frames(result, b / "checkpoint", skip_invalid=True)
    names_a = sorted(p.name for p in (a / "checkpoint").glob("*.frame"))
    names_b = sorted(p.name for p in (b / "checkpoint").glob("*.frame"))
    if names_a != names_b:
        raise RuntimeError("datasets A and B hold different tracked frames")
    return px, residual


def tracking_error_px(a: Path, flame: FlameModel, true_px: np.ndarray) -> float:
    """Median distance (px, crop pixels) between A's fitted FLAME vertices and the true ones, over tracked frames."""
    res = load_tracking(a / ".work" / "tracking.npz")
    fitted = res.project(res.vertices(flame))
    return float(np.median(np.linalg.norm(fitted[res.valid] - true_px[res.valid], axis=-1)))


def train(dataset: Path, out: Path, files: SubjectFilePaths, args: argparse.Namespace) -> TrainResult:
    opts = TrainOptions(iterations=args.iterations, size=args.size, device=args.device, seed=args.seed,
                        checkpoint_every=args.iterations, preview_every=args.iterations, eval_every=0,
                        hidden_dim=args.mlp_width, hidden_layers=args.mlp_layers, zero_head=args.mlp_init == "zero",
                        progress=False, workers=2)
    return Trainer(dataset, out, files, opts, say=lambda s: None).run()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of the generated video (25 fps)")
    ap.add_argument("--video-size", type=int, default=512, help="side of the generated video (px)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--size", type=int, help="training image height (default: 512 on CUDA, 64 on the CPU)")
    ap.add_argument("--mlp-width", type=int, help="deformation MLP width (default: 256 on CUDA, 32 on the CPU)")
    ap.add_argument("--mlp-layers", type=int, help="deformation MLP layers (default: 6 on CUDA, 2 on the CPU)")
    ap.add_argument("--mlp-init", choices=("upstream", "zero"), help="default: upstream on CUDA, zero on the CPU")
    ap.add_argument("--seed", type=int, default=0, help="seed of the motion and of both trainings")
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN, help="FlashAvatar reference folder (FLAME files)")
    ap.add_argument("--out", type=Path, help="keep everything here (default: a temporary folder)")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device == "cuda"
    args.size = args.size or (512 if cuda else 64)
    args.mlp_width = args.mlp_width or (256 if cuda else 32)
    args.mlp_layers = args.mlp_layers or (6 if cuda else 2)
    args.mlp_init = args.mlp_init or ("upstream" if cuda else "zero")
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"

    with tempfile.TemporaryDirectory(prefix="bench_learned_") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        arrays = build_synthetic_flame(args.golden / "FlameMesh.obj")
        model_path = out / "flame_standin.npz"
        np.savez(model_path, **arrays)
        files = SubjectFilePaths(model_path, args.golden / "FLAME_masks_synthetic.pkl", args.golden / "FlameMesh.obj",
                                 args.golden)
        flame = FlameModel.from_files(model_path, args.golden)
        frames = int(round(args.seconds * FPS))
        print(f"device: {name}; video {frames} frames at {args.video_size}²; training {args.iterations} iterations "
              f"at {args.size}², MLP {args.mlp_width}x{args.mlp_layers} ({args.mlp_init} init), seed {args.seed}")

        t0 = time.perf_counter()
        video = make_video(flame, astronaut_texture(arrays["v_template"], arrays["f"]), frames, args.video_size,
                           args.seed)
        write_video(video, out / "clip.mp4")
        truth = dict(np.load(out / "clip.truth.npz"))
        print(f"video: rendered and encoded in {time.perf_counter() - t0:.1f} s")

        a, b = out / "A_prepared", out / "B_truth"
        t0 = time.perf_counter()
        prep = prepare(out / "clip.mp4", a, PrepareOptions(files, device=args.device, log=lambda s: None,
                                                          progress_stream=io.StringIO()))
        print(f"A (avatar prepare): {prep.images} images, {prep.tracked} tracked, face mesh in "
              f"{prep.detection_rate * 100:.1f} % in {time.perf_counter() - t0:.1f} s "
              f"({', '.join(f'{k} {v:.1f}' for k, v in prep.stage_seconds.items())})")
        t0 = time.perf_counter()
        true_px, residual = dataset_from_truth(a, b, truth, flame)
        err = tracking_error_px(a, flame, true_px)
        print(f"B (true tracking): same images and masks in {time.perf_counter() - t0:.1f} s; camera under one K: "
              f"{residual:.3f} px median residual; A's fitted vertices are {err:.2f} px (median) from the truth")

        scores = {}
        for label, data in (("A", a), ("B", b)):
            res = train(data, out / f"train_{label}", files, args)
            sc = res.scores
            assert sc is not None
            scores[label] = sc
            print(f"train {label}: {res.iteration} iterations in {res.seconds:.1f} s ({res.its_per_s:.1f} it/s); "
                  f"held-out PSNR {sc.psnr:.2f} dB ({sc.psnr_head:.2f} dB on the head), SSIM {sc.ssim:.4f} on "
                  f"{res.test_frames} frames")
        gap, gap_head = scores["B"].psnr - scores["A"].psnr, scores["B"].psnr_head - scores["A"].psnr_head
        print(f"gap (true - fitted tracking): {gap:+.2f} dB ({gap_head:+.2f} dB on the head), SSIM "
              f"{scores['B'].ssim - scores['A'].ssim:+.4f}: what tracking costs the learned avatar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
