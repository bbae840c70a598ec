"""`avatar-bridge bench [render|face|encode|e2e|all]`: the performance table of this machine.

Each row uses what exists here: the demo head on the CPU renderer always, FlashAvatar with gsplat when CUDA
and its files are configured, the procedural face driver always and DiffPoseTalk when configured, PyAV's
H.264 encoder at the configured size, and a short in-process daemon run for glass-to-glass latency. A row
whose component is unavailable is printed as skipped, with the reason; one whose configured files cannot be
used is FAILED, with the fix, and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.config import Config, load_config
from bridge.core.errors import UserError
from bridge.core.interfaces import Avatar
from bridge.runtime import registry

SECTIONS = ("render", "face", "encode", "e2e")


@dataclass
class Row:
    section: str
    name: str
    value: float | None = None  # frames per second (or ms for latency rows)
    unit: str = "fps"
    detail: str = ""
    skipped: str | None = None
    failed: str | None = None  # configured but unusable (a user error): the command exits non-zero

    def line(self) -> str:
        if self.failed is not None:
            return f"{self.section:<8}{self.name:<46}{'FAILED':>12}  {self.failed}"
        if self.skipped is not None:
            return f"{self.section:<8}{self.name:<46}{'skipped':>12}  {self.skipped}"
        return f"{self.section:<8}{self.name:<46}{self.value:>8.1f} {self.unit:<4} {self.detail}"


def timed(fn: Callable[[], object], seconds: float, min_runs: int = 3) -> tuple[float, int]:
    """Runs of `fn` per second over about `seconds` (after one warm-up run)."""
    fn()
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < seconds:
        fn()
        runs += 1
    return runs / (time.perf_counter() - start), runs


def _cycle(fn: Callable[[Any], object], items: list[Any]) -> Callable[[], object]:
    """A no-argument call that feeds `fn` the next item, round and round."""
    state = {"i": 0}

    def call() -> object:
        state["i"] += 1
        return fn(items[state["i"] % len(items)])

    return call


def _params_sequence(n: int) -> list[Any]:
    from bridge.core.face_params import FaceParams

    out = []
    for i in range(n):
        t = i / 25.0
        p = FaceParams.neutral(pts=t)
        p.jaw[0] = 0.15 + 0.15 * np.sin(t * 9.0)
        p.head[1] = 0.2 * np.sin(t * 1.3)
        p.eyelids[:] = 1.0 if i % 40 == 0 else 0.0
        out.append(p)
    return out


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def bench_render(cfg: Config, seconds: float) -> list[Row]:
    rows = []
    seq = _params_sequence(50)
    w, h = cfg.video.width, cfg.video.height
    variants: list[tuple[str, str, str | None]] = [
        ("demo", "cpu", None),
        ("demo", "gsplat", None if _cuda() else "no CUDA"),
        ("flashavatar", "gsplat", None if _cuda() else "no CUDA"),
    ]
    for kind, renderer, reason in variants:
        label = f"{kind} avatar, {renderer} renderer, {w}x{h}"
        if kind == "flashavatar" and reason is None and cfg.avatar.checkpoint is None:
            reason = "avatar.checkpoint not configured (see install/models.md)"
        if reason:
            rows.append(Row("render", label, skipped=reason))
            continue
        avatar: Avatar | None = None
        try:
            sub = cfg.model_copy(deep=True)
            sub.avatar.kind = kind  # type: ignore[assignment]
            sub.avatar.renderer = renderer  # type: ignore[assignment]
            sub.avatar.device = "cuda" if renderer == "gsplat" else "cpu"  # type: ignore[assignment]
            avatar = registry.create("avatar", kind, sub)
            fps, runs = timed(_cycle(avatar.render, seq), seconds)
            rows.append(Row("render", label, fps, detail=f"{runs} frames, device {avatar.device}"))
        except UserError as exc:
            rows.append(Row("render", label, failed=str(exc)))
        except Exception as exc:
            rows.append(Row("render", label, skipped=f"{type(exc).__name__}: {exc}"))
        finally:
            if avatar is not None:
                avatar.close()
    return rows


def _speech_like(seconds: float) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    env = 0.5 * (1 + np.sin(2 * np.pi * 3.0 * t))
    return (0.3 * env * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 900 * t))).astype(np.float32)


def bench_face(cfg: Config, seconds: float) -> list[Row]:
    from bridge.core.interfaces import AudioChunk

    rows = []
    audio = _speech_like(4.0)
    fps_v = cfg.video.fps
    drivers: list[tuple[str, str | None]] = [("procedural", None)]
    dpt = cfg.face.diffposetalk.checkpoint
    drivers.append(("diffposetalk", None if dpt else "face.diffposetalk.checkpoint not configured"))
    for name, reason in drivers:
        label = f"{name} face driver, {fps_v} fps"
        if reason:
            rows.append(Row("face", label, skipped=reason))
            continue
        try:
            driver = registry.create("face", name, cfg)

            def run(d: Any = driver) -> int:
                d.reset(0.0)
                made = 0
                for i in range(0, len(audio), 320):
                    made += len(d.push(AudioChunk(audio[i : i + 320], pts=i / 16_000)))
                return made + len(d.flush())

            frames = run()
            per_s, _ = timed(run, seconds, min_runs=1)
            rows.append(Row("face", label, per_s * frames, detail=f"{frames} frames per 4 s of audio; "
                            f"latency {1000 * float(driver.latency):.0f} ms, {per_s * 4:.0f}x real time"))
        except UserError as exc:
            rows.append(Row("face", label, failed=str(exc)))
        except Exception as exc:
            rows.append(Row("face", label, skipped=f"{type(exc).__name__}: {exc}"))
    return rows


def bench_encode(cfg: Config, seconds: float) -> list[Row]:
    import io

    w, h = cfg.video.width, cfg.video.height
    label = f"H.264 (libx264 {cfg.outputs.record.preset}), {w}x{h}"
    try:
        import av
    except Exception as exc:
        return [Row("encode", label, skipped=f"PyAV not importable: {exc}")]
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    frames = [np.roll(base, 4 * i, axis=1) for i in range(8)]
    buf = io.BytesIO()
    container = av.open(buf, mode="w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=cfg.video.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": cfg.outputs.record.preset, "crf": str(cfg.outputs.record.crf)}
        count = iter(range(1 << 30))

        def encode() -> None:
            frame = av.VideoFrame.from_ndarray(frames[next(count) % len(frames)], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)

        fps, runs = timed(encode, seconds)
        for packet in stream.encode():
            container.mux(packet)
    except Exception as exc:
        return [Row("encode", label, skipped=f"{type(exc).__name__}: {exc}")]
    finally:
        container.close()
    return [Row("encode", label, fps, detail=f"{runs} frames, {len(buf.getvalue()) / 1024:.0f} KiB")]


def bench_e2e(cfg: Config, seconds: float) -> list[Row]:
    """A short real daemon run (file audio in real time, no network surfaces), timing frames as sinks see them."""
    import asyncio
    import threading

    label = f"daemon {cfg.avatar.kind}/{cfg.face.driver}, glass-to-glass"
    try:
        from bridge.runtime.daemon import Daemon
    except Exception as exc:
        return [Row("e2e", label, skipped=f"daemon not available: {exc}")]
    sub = cfg.model_copy(deep=True)
    sub.http.enabled = False
    sub.osc.enabled = sub.vmc.enabled = sub.midi.enabled = False
    sub.audio.source = "file"  # type: ignore[assignment]
    sub.audio.realtime = True
    sub.audio.loop = True
    run_for = max(seconds * 2, 3.0)
    latencies: list[float] = []
    arrivals: list[float] = []
    try:
        daemon = Daemon(sub, duration=run_for)
        frames = daemon.frames.subscribe(maxsize=256)
        done = threading.Event()

        def consume() -> None:
            while not done.is_set():
                frame = frames.get(timeout=0.2)
                if frame is None:
                    continue
                arrivals.append(time.perf_counter())
                if frame.audio_time is not None:
                    latencies.append(daemon.clock.now() - frame.audio_time)

        reader = threading.Thread(target=consume, name="bench-e2e", daemon=True)
        reader.start()
        try:
            asyncio.run(daemon.serve())
        finally:
            done.set()
            reader.join(2.0)
            frames.close()
    except UserError as exc:
        return [Row("e2e", label, failed=str(exc))]
    except Exception as exc:
        return [Row("e2e", label, skipped=f"{type(exc).__name__}: {exc}")]
    if not latencies or len(arrivals) < 2:
        return [Row("e2e", label, skipped="no frames carried an audio time")]
    lat = np.array(latencies[len(latencies) // 5 :] or latencies) * 1000  # skip the start-up transient
    snap = daemon.stats.snapshot()
    dropped = sum(int(s["dropped"]) for s in snap["stages"].values())  # type: ignore[union-attr]
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    return [
        Row("e2e", label, float(np.median(lat)), unit="ms",
            detail=f"p95 {np.percentile(lat, 95):.0f} ms over {len(lat)} frames"),
        Row("e2e", "delivered frame rate", rate, detail=f"{dropped} dropped, target {sub.video.fps}"),
    ]


BENCHES: dict[str, Callable[[Config, float], list[Row]]] = {
    "render": bench_render,
    "face": bench_face,
    "encode": bench_encode,
    "e2e": bench_e2e,
}


def machine_line() -> str:
    import os
    import platform

    parts = [platform.platform(), f"{os.cpu_count()} CPUs"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name(0))
    except Exception:
        parts.append("no torch")
    return ", ".join(parts)


def bench(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise UserError(f"--size {args.size!r} is not WxH; use e.g. --size 512x512") from None
        overrides["video"] = {"width": w, "height": h}
    cfg = load_config(args.config, overrides=overrides)
    chosen = SECTIONS if args.what == "all" else (args.what,)
    print(f"machine: {machine_line()}")
    print(f"{'stage':<8}{'what':<46}{'result':>12}")
    failed = []
    for section in chosen:
        for row in BENCHES[section](cfg, args.seconds):
            print(row.line(), flush=True)
            if row.failed is not None:
                failed.append(row)
    for row in failed:
        print(f"avatar-bridge: error: {row.section} {row.name}: {row.failed}", file=sys.stderr)
    return 1 if failed else 0


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="print the performance table of this machine",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=(*SECTIONS, "all"))
    p.add_argument("--config", type=Path, default=None, help="TOML config (model files, size, fps)")
    p.add_argument("--size", default=None, help="frame size WxH (default: the config's video size)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per row (default 2)")
    p.set_defaults(func=bench)
