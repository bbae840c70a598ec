"""`avatar prepare`: a phone video → a FlashAvatar dataset in upstream's layout (what `avatar train` reads).

Stages, each resumable (see stages.py) and each printing its time:

1. probe    - size, rotation, length; the disk check and the "too short" warning, before any work.
2. detect   - faces in every frame (scaled down): the largest is followed; light and sharpness are checked here,
              and a video whose face is only found when turned is called rotated.
3. crop     - the smoothed square track, the 512² crops (`imgs/`), the face mesh on each crop, `crops.csv`.
4. alpha    - person segmentation refined to full resolution (`alpha/`).
5. track    - FLAME fitted to the landmarks of the whole video (one shape, per-frame expression, jaw, eyes, lids
              and camera).
6. refine   - each frame's camera and expression refined against the crops' pixels (`photometric`), a stretch
              of frames at a time; written as metrical-tracker `.frame` files in `checkpoint/` (tracker frame
              m ↔ image m + 1).
7. parsing  - `parsing/NNNNN_neckhead.png` (cut at the fitted neck) and `parsing/NNNNN_mouth.png`.
8. report   - `report/report.md`: contact sheet, landmark-error and jitter plots, dropped frames.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.core.errors import UserError
from drivers.avatar.flashavatar.create import crop as crops
from drivers.avatar.flashavatar.create import report as rep
from drivers.avatar.flashavatar.create.stages import (
    Progress,
    StageRunner,
    atomic_path,
    write_bytes,
    write_text,
)
from drivers.avatar.flashavatar.create.video import FPS, VideoInfo, frames, probe

if TYPE_CHECKING:
    from drivers.avatar.flashavatar.create.tracking import TrackingResult
    from drivers.avatar.flashavatar.train.outputs import SubjectFilePaths

DETECT_SIDE = 640  # frames are scaled to this longest side for face detection
MIN_SECONDS = 20.0  # below this the avatar sees too few expressions and head poses to generalise
LOST_STRETCH_S = 0.5  # a face missing this long is a dropped stretch (shorter gaps are bridged)
DARK_LUMA = 40.0  # median face brightness (0-255) below which the video is too dark
BLUR_VAR = 0.005  # median Laplacian variance / variance of the face (at 128²) below which it is too blurred
BYTES_PER_FRAME = 160_000  # image + alpha + two masks, with room to spare
WORK = ".work"


@dataclass
class PrepareOptions:
    files: SubjectFilePaths
    device: str = "auto"
    log: Callable[[str], None] = print
    progress_stream: Any = None  # defaults to stderr
    max_seconds: float | None = None  # use only the first seconds of the video


@dataclass
class PrepareResult:
    dataset: Path
    images: int
    tracked: int
    detection_rate: float
    ms_per_frame: float
    report: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    write_bytes(path, buf.getvalue())


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _save_jpg(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)


def _save_png(path: Path, grey: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(grey).save(tmp, format="PNG")


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _read_grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def kept_frames(valid: np.ndarray) -> np.ndarray:
    """Frames inside a stretch of at least LOST_STRETCH_S without a face are dropped; shorter gaps are bridged
    by the fit's smoothing."""
    keep = np.ones_like(valid)
    for a, b in rep.runs(np.nonzero(~valid)[0]):
        if b - a + 1 >= LOST_STRETCH_S * FPS:
            keep[a:b + 1] = False
    return keep


def image_name(i: int) -> str:
    return f"{i:05d}"


class Preparer:
    """One dataset being made from one video; the stages are its methods."""

    def __init__(self, video: Path, out: Path, opts: PrepareOptions) -> None:
        self.video, self.out, self.opts = video, out, opts
        self.log = opts.log
        self.warnings: list[str] = []
        self.info: VideoInfo | None = None
        stat = video.stat() if video.is_file() else None
        key = {"video": str(video.resolve()), "size": stat.st_size if stat else 0,
               "mtime": stat.st_mtime_ns if stat else 0, "max_seconds": opts.max_seconds}
        self.runner = StageRunner(out, key, self.log)
        self.work = out / WORK

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"warning: {msg}")

    def progress(self, name: str, total: int) -> Progress:
        return Progress(name, total, stream=self.opts.progress_stream or sys.stderr)

    # -- 1. probe ---------------------------------------------------------------------------------------------
    def stage_probe(self) -> VideoInfo:
        if self.opts.max_seconds is not None and not self.opts.max_seconds > 0:
            raise UserError(f"--max-seconds {self.opts.max_seconds}: give a positive number of seconds")
        info = probe(self.video)
        if self.opts.max_seconds is not None:
            info = VideoInfo(info.path, info.width, info.height, info.rotation,
                             min(info.duration_s, self.opts.max_seconds), info.source_fps)
        self.info = info
        self.log(f"video: {info.width}x{info.height} (rotation {info.rotation}°), {info.duration_s:.1f} s at "
                 f"{info.source_fps:.1f} fps → {info.frames} frames at {FPS} fps")
        if info.duration_s < MIN_SECONDS:
            self.warn(f"the video is {info.duration_s:.0f} s long; {MIN_SECONDS:.0f} s or more (ideally 1-2 "
                      "minutes) lets the avatar see enough expressions and head turns to animate well, and the "
                      "last tenth is held out for testing; going on")
        self.out.mkdir(parents=True, exist_ok=True)
        need = info.frames * BYTES_PER_FRAME
        free = shutil.disk_usage(self.out).free
        if free < need:
            raise UserError(f"not enough disk space in {self.out}: the dataset needs about {need / 1e9:.1f} GB for "
                            f"{info.frames} frames and {free / 1e9:.1f} GB are free; free some space or give "
                            "--out on another disk")
        return info

    # -- 2. detect --------------------------------------------------------------------------------------------
    def stage_detect(self) -> dict[str, np.ndarray]:
        import cv2

        from drivers.avatar.flashavatar.create.landmarks import FaceFinder

        assert self.info is not None
        info = self.info
        n = info.frames
        boxes = np.full((n, 4), np.nan, np.float64)
        faces = np.zeros(n, np.int32)
        luma = np.full(n, np.nan)
        sharp = np.full(n, np.nan)
        finder = FaceFinder()
        bar = self.progress("detect", n)
        samples: list[np.ndarray] = []
        for fr in frames(info, max_side=DETECT_SIDE):
            if fr.index >= n:
                break
            found = finder.find(fr.rgb)
            faces[fr.index] = len(found)
            if fr.index % max(1, n // 8) == 0 and len(samples) < 8:
                samples.append(fr.rgb)
            if found:
                b = found[0]
                s = info.width / fr.rgb.shape[1]
                boxes[fr.index] = (b.x0 * s, b.y0 * s, b.x1 * s, b.y1 * s)
                x0, y0 = max(0, int(b.x0)), max(0, int(b.y0))
                face = fr.rgb[y0:int(b.y1), x0:int(b.x1)]
                if face.size:
                    grey = cv2.cvtColor(np.ascontiguousarray(face), cv2.COLOR_RGB2GRAY)
                    luma[fr.index] = float(np.median(grey))
                    small = cv2.resize(grey, (128, 128)).astype(np.float64)
                    # detail relative to contrast, so a dim but sharp face is not called blurred
                    sharp[fr.index] = float(cv2.Laplacian(small, cv2.CV_64F).var() / max(small.var(), 1.0))
            bar.update()
        bar.close()
        if 0 < bar.done < n:  # the container's duration promised more frames than it holds
            n = bar.done
            boxes, faces, luma, sharp = boxes[:n], faces[:n], luma[:n], sharp[:n]
        valid = np.isfinite(boxes[:, 0])
        if not valid.any() or valid.mean() < 0.5:
            self._check_rotated(finder, samples, valid)
        finder.close()
        if not valid.any():
            raise UserError(f"no face found in {self.video}: film your face from the front, filling about a third "
                            "of the picture, in even light")
        several = int((faces > 1).sum())
        if several:
            self.warn(f"{several} frames show more than one face; the largest face is the one followed")
        if np.nanmedian(luma) < DARK_LUMA:
            raise UserError(f"the video is too dark (face brightness {np.nanmedian(luma):.0f} of 255; needs "
                            f"{DARK_LUMA:.0f}+): record again facing a window or a lamp")
        if np.nanmedian(sharp) < BLUR_VAR:
            raise UserError(f"the video is too blurred (face sharpness {np.nanmedian(sharp) * 1000:.1f}; needs "
                            f"{BLUR_VAR * 1000:.0f}+): record again with the phone steady, in focus and in good light")
        _save_npz(self.work / "detect.npz", boxes=boxes, faces=faces, luma=luma, sharp=sharp)
        return {"boxes": boxes, "faces": faces}

    def _check_rotated(self, finder: Any, samples: list[np.ndarray], valid: np.ndarray) -> None:
        """A face found only in turned frames means the video's rotation is missing: say so and stop."""
        for k, how in ((1, "90° counterclockwise (ffmpeg -i in.mp4 -vf transpose=2 out.mp4)"),
                       (3, "90° clockwise (ffmpeg -i in.mp4 -vf transpose=1 out.mp4)"),
                       (2, "upside down (ffmpeg -i in.mp4 -vf transpose=1,transpose=1 out.mp4)")):
            turned = sum(1 for s in samples if finder.find(np.ascontiguousarray(np.rot90(s, k))))
            if samples and turned > max(len(samples) // 2, int(valid.mean() * len(samples))):
                raise UserError(f"{self.video} looks rotated: the face is only found when the picture is turned "
                                f"(the file lacks its rotation tag); rotate it {how} and run again")

    # -- 3. crop + landmarks ------------------------------------------------------------------------------------
    def stage_crop(self, det: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from drivers.avatar.flashavatar.create.landmarks import N_POINTS, FaceMesher

        assert self.info is not None
        info = self.info
        boxes = det["boxes"]
        n = len(boxes)
        valid = np.isfinite(boxes[:, 0])
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        track = crops.smooth_track(np.nan_to_num(centers), np.nan_to_num(sizes), valid)
        points = np.full((n, N_POINTS, 2), np.nan, np.float32)
        times = np.zeros(n)
        mesher = FaceMesher()
        bar = self.progress("crop+landmarks", n)
        (self.out / "imgs").mkdir(parents=True, exist_ok=True)
        for fr in frames(info):
            if fr.index >= n:
                break
            img = crops.crop(fr.rgb, track.boxes[fr.index])
            _save_jpg(self.out / "imgs" / f"{image_name(fr.index)}.jpg", img)
            p = mesher.points(img)
            if p is not None:
                points[fr.index] = p
            times[fr.index] = fr.time_s
            bar.update()
        bar.close()
        if bar.done < n:  # fewer frames decoded this time: keep the images that exist
            n = bar.done
            points, times, track = points[:n], times[:n], crops.CropTrack(track.boxes[:n])
        mesh_ok = np.isfinite(points[:, 0, 0])
        rows = io.StringIO()
        w = csv.writer(rows)
        w.writerow(["image", "source_time_s", "x0", "y0", "x1", "y1"])
        for i in range(n):
            w.writerow([i, f"{times[i]:.4f}", *(f"{v:.2f}" for v in track.boxes[i])])
        write_text(self.out / "crops.csv", rows.getvalue())
        ms = mesher.ms_per_frame
        mesher.close()
        _save_npz(self.work / "landmarks.npz", points=points, valid=mesh_ok, times=times, boxes=track.boxes,
                  ms_per_frame=np.array(ms))
        self.log(f"face mesh: found in {mesh_ok.mean() * 100:.1f} % of {n} frames, {ms:.1f} ms/frame")
        return _load_npz(self.work / "landmarks.npz")

    # -- 4. alpha -----------------------------------------------------------------------------------------------
    def stage_alpha(self, n: int) -> None:
        from drivers.avatar.flashavatar.create.masks import Segmenter

        seg = Segmenter()
        bar = self.progress("alpha", n)
        for i in range(n):
            rgb = _read_rgb(self.out / "imgs" / f"{image_name(i)}.jpg")
            a = seg.alpha(rgb)
            _save_jpg(self.out / "alpha" / f"{image_name(i)}.jpg",
                      np.repeat((a * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2))
            bar.update()
        bar.close()
        seg.close()

    # -- 5. track -----------------------------------------------------------------------------------------------
    def flame(self, device: str = "cpu") -> Any:
        from drivers.avatar.flame.model import FlameModel

        return FlameModel.from_files(self.opts.files.flame_model, self.opts.files.eyelids_dir, device=device)

    def stage_track(self, lm: dict[str, np.ndarray]) -> TrackingResult:
        from drivers.avatar.flashavatar.create.correspondence import shipped_correspondence
        from drivers.avatar.flashavatar.create.tracking import fit_video

        points, detected = lm["points"], lm["valid"].astype(bool)
        kept = kept_frames(detected)
        bar = Progress("track", 1, unit="step", stream=self.opts.progress_stream or sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.done)

        result = fit_video(np.nan_to_num(points), detected & kept, crops.SIZE, self.flame(), None,
                           shipped_correspondence(), device=self.opts.device, progress=progress)
        bar.close()
        save_tracking(self.work / "landmark_fit.npz", result)
        return result

    # -- 6. refine ----------------------------------------------------------------------------------------------
    def stage_refine(self, fitted: TrackingResult, kept: np.ndarray) -> TrackingResult:
        """The landmark fit's camera and expression refined against the crops' pixels (`photometric`), reading
        the crops back from imgs/ a stretch at a time; then the `.frame` files."""
        from drivers.avatar.flashavatar.create.frame_files import write_frames
        from drivers.avatar.flashavatar.create.photometric import refine_video
        from drivers.avatar.flashavatar.create.tracking import resolve_device

        bar = self.progress("refine", fitted.frames)

        def read(a: int, b: int) -> list[np.ndarray]:
            return [_read_rgb(self.out / "imgs" / f"{image_name(i)}.jpg") for i in range(a, b)]

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.done)

        device = str(resolve_device(self.opts.device))  # the whole FLAME is posed for every frame: keep it there
        result = refine_video(fitted, read, self.flame(device), device=device, progress=progress)
        bar.close()
        save_tracking(self.work / "tracking.npz", result)
        folder = self.out / "checkpoint"
        if folder.is_dir():  # frames of an earlier, interrupted run
            shutil.rmtree(folder)
        # short gaps keep their interpolated tracking; a long stretch without a face gets no .frame (dropped)
        write_frames(dataclasses.replace(result, valid=kept), folder, skip_invalid=True)
        return result

    # -- 7. parsing ---------------------------------------------------------------------------------------------
    def stage_parsing(self, lm: dict[str, np.ndarray], result: TrackingResult) -> None:
        from drivers.avatar.flame.files import load_masks
        from drivers.avatar.flashavatar.create.masks import mouth_mask, neckhead_mask

        rim = np.asarray(load_masks(self.opts.files.flame_masks)["boundary"], np.int64)
        flame = self.flame()
        n = len(lm["points"])
        bar = self.progress("parsing", n)
        chunk = 64
        for s in range(0, n, chunk):
            sl = slice(s, min(n, s + chunk))
            neck = result.project(result.vertices(flame, sl)[:, rim])
            for j, i in enumerate(range(sl.start, sl.stop)):
                alpha = _read_grey(self.out / "alpha" / f"{image_name(i)}.jpg").astype(np.float32) / 255.0
                pts = lm["points"][i] if lm["valid"][i] else None
                _save_png(self.out / "parsing" / f"{image_name(i)}_neckhead.png", neckhead_mask(alpha, neck[j]))
                _save_png(self.out / "parsing" / f"{image_name(i)}_mouth.png", mouth_mask(pts, alpha.shape))
                bar.update()
        bar.close()

    # -- 8. report ----------------------------------------------------------------------------------------------
    def stage_report(self, lm: dict[str, np.ndarray], result: TrackingResult) -> Path:
        n = len(lm["points"])
        flame = self.flame()
        mesh = np.concatenate([result.project(result.vertices(flame, slice(s, min(n, s + 64))))
                               for s in range(0, n, 64)])
        err = np.where(result.valid, result.landmark_error_px, np.nan)
        mesh[~result.valid] = np.nan
        dropped = rep.dropped_ranges(kept_frames(lm["valid"].astype(bool)),
                                     f"no face for {LOST_STRETCH_S:.1f} s or more")
        data = rep.ReportData([self.out / "imgs" / f"{image_name(i)}.jpg" for i in range(n)], lm["points"], mesh,
                              err, dropped, figures=self.figures(lm, result))
        return rep.write_report(data, self.out / "report")

    def figures(self, lm: dict[str, np.ndarray], result: TrackingResult) -> dict[str, str]:
        err = result.landmark_error_px[result.valid]
        return {"images": str(len(lm["points"])), "frames tracked": str(int(result.valid.sum())),
                "face-mesh detection rate": f"{lm['valid'].mean() * 100:.1f} %",
                "face mesh ms/frame": f"{float(lm['ms_per_frame']):.1f}",
                "median landmark error": f"{np.median(err):.2f} px" if err.size else "-",
                "crop jitter (median second difference)": f"{crops.jitter_px(lm['boxes']):.3f} px"}

    # -- all ----------------------------------------------------------------------------------------------------
    def run(self) -> PrepareResult:
        from drivers.avatar.flashavatar.create.landmarks import solutions

        solutions()  # the extra's installation is checked before anything else
        r = self.runner
        self.stage_probe()  # cheap, always run: it carries the up-front checks
        det = r.run("detect", self.stage_detect, lambda: _load_npz(self.work / "detect.npz"))
        n = len(det["boxes"])
        lm = r.run("crop", lambda: self.stage_crop(det), lambda: self._complete(
            _load_npz(self.work / "landmarks.npz"), [self.out / "imgs" / f"{image_name(i)}.jpg" for i in range(n)]))
        n = len(lm["points"])
        r.run("alpha", lambda: self.stage_alpha(n), lambda: self._complete(
            None, [self.out / "alpha" / f"{image_name(i)}.jpg" for i in range(n)]))
        flame = self.flame_key()
        fitted = r.run("track", lambda: self.stage_track(lm), lambda: load_tracking(self.work / "landmark_fit.npz"),
                       flame)
        kept = kept_frames(lm["valid"].astype(bool))
        result = r.run("refine", lambda: self.stage_refine(fitted, kept),
                       lambda: load_tracking(self.work / "tracking.npz"), flame)
        r.run("parsing", lambda: self.stage_parsing(lm, result), lambda: self._complete(
            None, [self.out / "parsing" / f"{image_name(i)}_{k}.png" for i in range(n) for k in ("neckhead", "mouth")]),
            flame)
        report = r.run("report", lambda: self.stage_report(lm, result),
                       lambda: self._complete(self.out / "report" / "report.md",
                                              [self.out / "report" / "report.md"]), flame)
        self.log(r.times.summary())
        tracked = int(result.valid.sum())
        if tracked < len(lm["points"]):
            gone = rep.dropped_ranges(result.valid, "not tracked")
            self.warn(f"{len(lm['points']) - tracked} of {n} frames are left out of training: "
                      f"{rep.describe(gone)}; see {report}")
        return PrepareResult(self.out, n, tracked, float(lm["valid"].mean()), float(lm["ms_per_frame"]), report,
                             dict(r.times.seconds), self.warnings)

    def flame_key(self) -> dict[str, Any]:
        """The FLAME files the tracking depends on (by path, size and time): other files redo it."""
        f = self.opts.files
        out: dict[str, Any] = {}
        for name, path in (("flame_model", f.flame_model), ("flame_masks", f.flame_masks)):
            st = Path(path).stat()
            out[name] = [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]
        return out

    @staticmethod
    def _complete(value: Any, files: list[Path]) -> Any:
        missing = next((f for f in files if not f.is_file()), None)
        if missing is not None:
            raise FileNotFoundError(missing)
        return value


def save_tracking(path: Path, r: TrackingResult) -> None:
    _save_npz(path, shape=r.shape, expression=r.expression, jaw=r.jaw, eyes=r.eyes, eyelids=r.eyelids, R=r.R, t=r.t,
              K=r.K, image_size=np.array(r.image_size), landmark_error_px=r.landmark_error_px, valid=r.valid)


def load_tracking(path: Path) -> TrackingResult:
    from drivers.avatar.flashavatar.create.tracking import TrackingResult

    z = _load_npz(path)
    return TrackingResult(shape=z["shape"], expression=z["expression"], jaw=z["jaw"], eyes=z["eyes"],
                          eyelids=z["eyelids"], R=z["R"], t=z["t"], K=z["K"], image_size=int(z["image_size"]),
                          landmark_error_px=z["landmark_error_px"], valid=z["valid"].astype(bool))


def prepare(video: Path, out: Path, opts: PrepareOptions) -> PrepareResult:
    return Preparer(video, out, opts).run()
