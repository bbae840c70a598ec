"""The tracking report: what the user looks at to judge a dataset before hours of training.

`report.md` beside a contact sheet (sampled frames with the fitted mesh and the detected landmarks drawn over
them), plots of the per-frame landmark error and of the jitter (frame-to-frame second difference of the fitted
mesh's projection; a still face should give a flat line near zero), and the frames dropped and why. Drawn with
PIL only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from drivers.avatar.flashavatar.create.stages import atomic_path, write_text

SHEET_FRAMES = 12
THUMB = 256


@dataclass
class ReportData:
    """Everything the report shows, per image of the dataset."""

    images: list[Path]
    landmarks: np.ndarray  # (F,478,2) crop pixels (NaN where none)
    mesh_points: np.ndarray | None  # (F,V,2) projected fitted vertices (NaN where not tracked)
    landmark_error_px: np.ndarray  # (F,) NaN where not tracked
    dropped: list[tuple[int, int, str]]  # (first, last, why) image ranges
    figures: dict[str, str] = field(default_factory=dict)  # name -> value, printed as a table


def runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs of the given sorted frame numbers as (first, last)."""
    out: list[tuple[int, int]] = []
    for f in frames.tolist():
        if out and f == out[-1][1] + 1:
            out[-1] = (out[-1][0], f)
        else:
            out.append((f, f))
    return out


def dropped_ranges(valid: np.ndarray, why: str) -> list[tuple[int, int, str]]:
    return [(a, b, why) for a, b in runs(np.nonzero(~valid)[0])]


def describe(ranges: list[tuple[int, int, str]], limit: int = 6) -> str:
    parts = [(f"{a:05d}" if a == b else f"{a:05d}-{b:05d}") + f" ({why})" for a, b, why in ranges[:limit]]
    return ", ".join(parts) + (f" and {len(ranges) - limit} more" if len(ranges) > limit else "")


def jitter(points: np.ndarray) -> np.ndarray:
    """Per-frame median |second difference| of projected points (F,), in pixels; NaN at the ends and gaps."""
    out = np.full(points.shape[0], np.nan)
    if points.shape[0] >= 3:
        d2 = points[2:] - 2 * points[1:-1] + points[:-2]
        out[1:-1] = np.median(np.linalg.norm(d2, axis=-1), axis=-1)
    return out


def plot(values: np.ndarray, title: str, unit: str, path: Path, size: tuple[int, int] = (900, 260)) -> Path:
    """A line plot of one value per frame (NaN as gaps) with its median, as a PNG."""
    w, h = size
    left, right, top, bottom = 60, 10, 24, 24
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    finite = values[np.isfinite(values)]
    hi = float(np.percentile(finite, 99)) * 1.1 if finite.size else 1.0
    hi = hi if hi > 0 else 1.0
    med = float(np.median(finite)) if finite.size else float("nan")
    d.text((left, 4), f"{title}  (median {med:.2f} {unit})", fill="black")
    d.rectangle((left, top, w - right, h - bottom), outline="grey")
    for frac in (0.0, 0.5, 1.0):
        y = h - bottom - frac * (h - top - bottom)
        d.text((4, y - 6), f"{hi * frac:.2f}", fill="black")
    n = max(1, len(values) - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return (left + i / n * (w - left - right), h - bottom - min(v, hi) / hi * (h - top - bottom))

    run: list[tuple[float, float]] = []
    for i, v in enumerate(values.tolist()):
        if np.isfinite(v):
            run.append(xy(i, v))
        elif run:
            if len(run) > 1:
                d.line(run, fill="navy")
            else:
                d.point(run, fill="navy")
            run = []
    if len(run) > 1:
        d.line(run, fill="navy")
    if np.isfinite(med):
        y = xy(0, med)[1]
        d.line([(left, y), (w - right, y)], fill="orange")
    d.text((left, h - bottom + 4), f"frame 0 … {len(values) - 1}", fill="black")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def contact_sheet(data: ReportData, path: Path, frames: int = SHEET_FRAMES) -> Path:
    """Sampled frames with the fitted mesh (green dots) and the landmarks (red) drawn over them."""
    n = len(data.images)
    picks = np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int))
    cols = 4
    rows = (len(picks) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * THUMB, rows * THUMB), "black")
    for k, i in enumerate(picks.tolist()):
        with Image.open(data.images[i]) as src:
            im = src.convert("RGB")
        s = THUMB / im.size[0]
        im = im.resize((THUMB, THUMB), Image.Resampling.BILINEAR)
        d = ImageDraw.Draw(im)
        if data.mesh_points is not None:
            for x, y in data.mesh_points[i][::3].tolist():
                if np.isfinite(x):
                    d.point((x * s, y * s), fill=(0, 255, 0))
        for x, y in data.landmarks[i].tolist():
            if np.isfinite(x):
                d.point((x * s, y * s), fill=(255, 0, 0))
        d.text((4, 4), f"{i:05d}", fill="yellow")
        sheet.paste(im, ((k % cols) * THUMB, (k // cols) * THUMB))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def write_report(data: ReportData, folder: Path) -> Path:
    """report.md with its pictures in `folder`; returns the report's path."""
    contact_sheet(data, folder / "contact_sheet.png")
    plot(data.landmark_error_px, "landmark error of the fitted FLAME", "px", folder / "landmark_error.png")
    jit = jitter(data.mesh_points) if data.mesh_points is not None else jitter(data.landmarks)
    plot(jit, "jitter (second difference of the projected mesh)", "px", folder / "jitter.png")
    lines = ["# Tracking report", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in data.figures.items()]
    lines += ["", "## Sampled frames (green: fitted FLAME, red: detected landmarks)", "",
              "![contact sheet](contact_sheet.png)", "", "## Landmark error per frame", "",
              "![landmark error](landmark_error.png)", "", "## Jitter per frame", "", "![jitter](jitter.png)", "",
              "## Frames dropped", ""]
    lines += [f"- images {a:05d}-{b:05d}: {why}" for a, b, why in data.dropped] or ["none"]
    path = folder / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
