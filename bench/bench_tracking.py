"""How well and how fast avatar creation's FLAME tracking works, on a video whose truth is known.

    python bench/bench_tracking.py [--frames 100] [--size 512] [--device auto|cpu|cuda] [--out DIR]
                                   [--golden DIR] [--seed 0] [--speed-frames 3000 [--landmarks FILE]]
                                   [--no-photometric]

Renders the ground-truth test video (`create/synthetic_video`: the FLAME template wearing the astronaut photo,
turning ±25° yaw / ±15° pitch, the jaw opening, the eyes moving), writes it as an H.264 mp4 with its truth,
decodes the mp4 again, finds the face-mesh landmarks in every frame and fits FLAME to them with `fit_video`.
Prints, against the truth and with PASS/FAIL against the goals:
  - median 2D reprojection error of the fitted FLAME vertices (px; the face's vertices, and all of them)
  - head-rotation error relative to the first frame (degrees; median and worst frame)
  - jaw error (degrees, the opening angle; median and worst)
  - jitter: median second difference of the projected face vertices, fitted and true (px)
  - detection rate, ms/frame of the landmarks and of the fitting.
The figures are given for the landmark fit alone and after the photometric refinement of pose and expression
(`create/photometric.refine_video`, as `avatar prepare` runs it), so what that stage buys is printed;
--no-photometric skips it. --speed-frames N times `fit_video` and `refine_video` on N frames (the clip played
back and forth), for the GPU goal of 3000 frames at 512² in 3 minutes; with --landmarks the clip.mp4 beside
that file gives the frames (without it, or with --no-photometric, the fit alone is timed). The FLAME files are the
stand-in FLAME built on FlameMesh.obj and the eyelid blendshapes from --golden (the FlashAvatar reference folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN

from drivers.avatar.flame.model import FlameModel
from drivers.avatar.flashavatar.create.correspondence import shipped_correspondence
from drivers.avatar.flashavatar.create.landmarks import FaceMesher
from drivers.avatar.flashavatar.create.photometric import refine_video
from drivers.avatar.flashavatar.create.synthetic_flame import LEFT_EYEBALL, build_synthetic_flame
from drivers.avatar.flashavatar.create.synthetic_video import (
    astronaut_texture,
    make_video,
    rotation_error_deg,
    write_video,
)
from drivers.avatar.flashavatar.create.tracking import TrackingResult, fit_video

GOALS = {"vertex_px": 2.0, "rotation_deg": 2.0, "jaw_deg": 3.0, "jitter_px": 0.5, "detection": 1.0}


def decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def landmarks(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """(F,478,2) pixels, (F,) found, ms per frame."""
    detect = FaceMesher(still=True).points
    points = np.zeros((len(frames), 478, 2), np.float32)
    found = np.zeros(len(frames), bool)
    t0 = time.perf_counter()
    for i, img in enumerate(frames):
        p = detect(img)
        if p is not None:
            points[i], found[i] = p, True
    return points, found, (time.perf_counter() - t0) * 1000 / len(frames)


def evaluate(res: TrackingResult, flame: FlameModel, truth: dict[str, np.ndarray]) -> dict[str, float]:
    fitted = res.project(res.vertices(flame))
    true_px = truth["vertices_px"]
    template = flame.v_template.cpu().numpy()
    face = (template[:, 2] > template[:, 2].max() - 0.07) & (np.arange(len(template)) < LEFT_EYEBALL.start)
    err = np.linalg.norm(fitted - true_px, axis=-1)
    rot = rotation_error_deg(res.R, truth["R"])
    jaw = np.degrees(np.abs(np.linalg.norm(res.jaw, axis=1) - np.linalg.norm(truth["jaw"], axis=1)))

    def jitter(px: np.ndarray) -> float:
        return float(np.median(np.linalg.norm(px[2:, face] - 2 * px[1:-1, face] + px[:-2, face], axis=-1)))

    return {"vertex_px": float(np.median(err[:, face])), "vertex_all_px": float(np.median(err)),
            "rotation_deg": float(np.median(rot)), "rotation_max_deg": float(rot.max()),
            "jaw_deg": float(np.median(jaw)), "jaw_max_deg": float(jaw.max()),
            "jitter_fit_px": jitter(fitted), "jitter_true_px": jitter(true_px),
            "landmark_px": float(np.nanmedian(res.landmark_error_px))}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(title: str, res: TrackingResult, fit_ms: float, flame: FlameModel, truth: dict[str, np.ndarray],
           device: str) -> None:
    m = evaluate(res, flame, truth)
    stages = ", ".join(f"{k} {v:.1f}" for k, v in res.seconds.items())
    print(f"[{title}] fitting: {fit_ms:.1f} ms/frame on {device} (stages {stages}); the landmark fit's residual "
          f"{m['landmark_px']:.2f} px")
    print(f"[{title}] vertex error: {m['vertex_px']:.2f} px median over the face (all vertices "
          f"{m['vertex_all_px']:.2f})  goal <= 2 px  {verdict(m['vertex_px'] <= GOALS['vertex_px'])}")
    print(f"[{title}] head rotation error: {m['rotation_deg']:.2f} deg median, worst {m['rotation_max_deg']:.2f}  "
          f"goal <= 2 deg  {verdict(m['rotation_deg'] <= GOALS['rotation_deg'])}")
    print(f"[{title}] jaw error: {m['jaw_deg']:.2f} deg median, worst {m['jaw_max_deg']:.2f}  goal <= 3 deg  "
          f"{verdict(m['jaw_deg'] <= GOALS['jaw_deg'])}")
    gap = abs(m["jitter_fit_px"] - m["jitter_true_px"])
    print(f"[{title}] jitter: fitted {m['jitter_fit_px']:.3f} px, truth {m['jitter_true_px']:.3f} px "
          f"(gap {gap:.3f})  goal gap <= 0.5 px  {verdict(gap <= GOALS['jitter_px'])}")


def speed(points: np.ndarray, found: np.ndarray, n: int, size: int, flame: FlameModel, device: str,
          frames: list[np.ndarray] | None) -> None:
    """`fit_video` and then (given the clip's frames) `refine_video` on n frames: the clip back and forth."""
    order = np.concatenate([np.arange(len(points)), np.arange(len(points))[::-1]])
    order = np.tile(order, -(-n // len(order)))[:n]
    t0 = time.perf_counter()
    res = fit_video(points[order], found[order], size, flame, None, shipped_correspondence(), device=device)
    fit_s = time.perf_counter() - t0
    print(f"speed: fit_video on {n} frames at {size}²: {fit_s:.1f} s ({fit_s * 1000 / n:.2f} ms/frame; "
          f"stages {', '.join(f'{k} {v:.1f}' for k, v in res.seconds.items())})")
    total = fit_s
    if frames is not None:
        t0 = time.perf_counter()
        refine_video(res, lambda a, b: [frames[i] for i in order[a:b]], flame, device=device)
        refine_s = time.perf_counter() - t0
        total += refine_s
        print(f"speed: refine_video on {n} frames at {size}²: {refine_s:.1f} s ({refine_s * 1000 / n:.2f} ms/frame, "
              "reading the frames included)")
    what = "fit + refinement" if frames is not None else "fit alone"
    print(f"speed: tracking ({what}) {total:.1f} s; goal 3000 frames in 180 s on one H200: "
          f"{verdict(total * 3000 / n <= 180)} (scaled to 3000 frames: {total * 3000 / n:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-frames", type=int, default=0)
    ap.add_argument("--no-photometric", action="store_true", help="report the landmark fit alone")
    ap.add_argument("--landmarks", type=Path, default=None,
                    help="with --speed-frames: time the fit alone on a landmarks.npz an earlier run wrote (for a "
                    "machine without the face mesh), skipping the video and the accuracy figures")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; {args.frames} frames at {args.size}²; output in {out}")

    arrays = build_synthetic_flame(args.golden / "FlameMesh.obj")
    flame = FlameModel(arrays, np.load(args.golden / "l_eyelid.npy"), np.load(args.golden / "r_eyelid.npy"),
                       device=device)
    if args.landmarks is not None and args.speed_frames:
        saved = np.load(args.landmarks)
        clip = args.landmarks.parent / "clip.mp4"
        speed(saved["points"], saved["found"], args.speed_frames, args.size, flame, device,
              None if args.no_photometric or not clip.is_file() else decode(clip))
        return
    cpu_flame = FlameModel(arrays, np.load(args.golden / "l_eyelid.npy"), np.load(args.golden / "r_eyelid.npy"))
    t0 = time.perf_counter()
    video = make_video(cpu_flame, astronaut_texture(arrays["v_template"], arrays["f"]), args.frames, args.size, args.seed)
    write_video(video, out / "clip.mp4")
    print(f"video: rendered and encoded in {time.perf_counter() - t0:.1f} s -> {out / 'clip.mp4'}")

    frames = decode(out / "clip.mp4")
    points, found, lm_ms = landmarks(frames)
    np.savez(out / "landmarks.npz", points=points, found=found)
    t0 = time.perf_counter()
    res = fit_video(points, found, args.size, flame, None, shipped_correspondence(), device=device)
    fit_ms = (time.perf_counter() - t0) * 1000 / len(frames)
    rate = float(found.mean())
    print(f"detection: {found.sum()}/{len(found)} frames ({rate * 100:.1f} %)  goal 100 %  {verdict(rate >= 1.0)}")
    print(f"landmarks: {lm_ms:.1f} ms/frame (mediapipe face mesh, CPU)")
    report("landmark fit", res, fit_ms, cpu_flame, video.truth, device)
    if not args.no_photometric:
        t0 = time.perf_counter()
        refined = refine_video(res, lambda a, b: frames[a:b], flame, device=device)
        photo_ms = (time.perf_counter() - t0) * 1000 / len(frames)
        report("landmark fit + photometric refinement", refined, fit_ms + photo_ms, cpu_flame, video.truth, device)
    if args.speed_frames:
        speed(points, found, args.speed_frames, args.size, flame, device, None if args.no_photometric else frames)


if __name__ == "__main__":
    main()
