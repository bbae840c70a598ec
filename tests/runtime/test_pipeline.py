"""The whole path on real components: file audio → procedural driver → demo avatar → recorder, on real
threads and the real clock."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.core.config import load_config
from bridge.core.interfaces import VideoFrame
from bridge.runtime.daemon import Daemon
from tests.avatars import as_demo_avatar
from tests.conftest import read_recording

PIPELINE_THREADS = {"audio", "face", "clock", "render"}


def make_daemon(tmp_path: Path, audio: Path, /, **over: object) -> Daemon:
    base: dict = {
        "video": {"width": 96, "height": 96, "fps": 25},
        "audio": {"source": "file", "file": str(audio), "realtime": False},
        "http": {"enabled": False},
        "osc": {"enabled": False},
        "vmc": {"enabled": False},
        "midi": {"enabled": False},
        "avatar": {"renderer": "cpu", "device": "cpu"},
    }
    for key, value in over.items():
        base.setdefault(key, {}).update(value)  # type: ignore[union-attr]
    return Daemon(load_config(overrides=base, environ={}), record=tmp_path / "out.mp4")


def collect(daemon: Daemon) -> list[VideoFrame]:
    frames: list[VideoFrame] = []
    sub = daemon.frames.subscribe(maxsize=10_000)

    def pull() -> None:
        while True:
            item = sub.get(timeout=0.5)
            if item is None and (sub.closed or (not daemon.running and daemon.pipeline.finished.is_set())):
                return
            if item is not None:
                frames.append(item)

    thread = threading.Thread(target=pull, daemon=True)
    thread.start()
    asyncio.run(daemon.serve())
    thread.join(5)
    return frames


def test_offline_run_renders_every_frame_with_mouth_following_speech(tmp_path: Path, speechlike: Path) -> None:
    daemon = make_daemon(tmp_path, speechlike)
    frames = collect(daemon)
    assert [f.index for f in frames] == list(range(50))
    pts = np.array([f.pts for f in frames])
    np.testing.assert_allclose(np.diff(pts), 1 / 25, atol=1e-9)
    # Each frame was driven by the audio presented with it: audio_time + delay = pts.
    for f in frames:
        assert f.audio_time is not None and f.pts - f.audio_time == pytest.approx(daemon.av_delay, abs=1e-6)
    jaw = np.array([f.params.jaw[0] for f in frames if f.params is not None])
    t = (np.arange(50) + 0.5) / 25
    speaking = np.sin(2 * np.pi * 2.5 * t) > 0.2
    assert jaw[speaking].mean() > 3 * jaw[~speaking].mean()
    # The rendered mouth region changes with the jaw: the images are not all alike.
    mouth = np.array([f.rgb[60:76, 36:60].astype(np.float32).mean() for f in frames])
    assert np.corrcoef(mouth, jaw)[0, 1] ** 2 > 0.25
    rec = read_recording(tmp_path / "out.mp4")
    assert rec.frames == 50 and rec.audio_seconds == pytest.approx(rec.synced_audio_seconds(25), abs=1e-6)
    assert daemon.stats.snapshot()["stages"]["render"]["dropped"] == 0


def test_live_run_drops_late_frames_instead_of_queueing(tmp_path: Path, speechlike: Path) -> None:
    # An avatar that takes 50 ms a frame cannot keep 60 fps on any machine: the clock must drop, not fall behind.
    with as_demo_avatar("tests.avatars:SlowAvatar"):
        daemon = make_daemon(
            tmp_path, speechlike, video={"width": 96, "height": 96, "fps": 60}, audio={"realtime": True}
        )
    frames = collect(daemon)
    snap = daemon.stats.snapshot()
    assert snap["stages"]["render"]["dropped"] > 0
    assert len(frames) < 2.0 * 60
    lag = np.array([f.rendered_at - f.pts for f in frames])
    render_p99 = snap["stages"]["render"]["p99_ms"] / 1000
    # A due frame gives way to a newer one, so a frame waits at most for the render in flight: latency never
    # grows beyond two renders, and not over the run either.
    assert lag.max() < 2 * render_p99 + 0.03
    assert abs(lag[-10:].mean() - lag[:10].mean()) < 2 * render_p99 + 0.05
    # Each late frame is accounted for: its 50 ms render, and where the rest of its lateness went (the clock's
    # hand-over, the wait for the render in flight), which together cover it.
    late = list(daemon.pipeline.late_frames)
    assert late and snap["counters"]["frames_late"] >= len(late)
    for lf in late:
        assert lf.render >= 0.045 and lf.late > 0.5 / 60 and lf.waited >= 0.0
        assert lf.late <= lf.tick_late + lf.waited + lf.render + 0.03
    rec = read_recording(tmp_path / "out.mp4")
    # Live, the clock keeps going until the face driver has flushed its end of the speech, which on a busy
    # machine can come a few frames after the 120 the clip covers.
    assert 120 <= rec.frames <= 126
    assert rec.audio_seconds == pytest.approx(rec.synced_audio_seconds(60), abs=1e-6)


def test_stop_is_prompt_and_leaves_no_threads(tmp_path: Path) -> None:
    from drivers.audio.decode import demo_clip_path

    with as_demo_avatar():  # what a stop waits for is the pipeline, not this machine's rendering speed
        daemon = make_daemon(tmp_path, demo_clip_path(), audio={"realtime": True, "loop": True})
    loop_holder: dict = {}

    def run() -> None:
        loop_holder["code"] = asyncio.run(daemon.serve())

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 30
    while daemon.pipeline.frames_rendered < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.pipeline.frames_rendered >= 5
    t0 = time.monotonic()
    daemon.request_stop()
    runner.join(5)
    assert not runner.is_alive() and time.monotonic() - t0 < 2.0
    assert loop_holder["code"] == 0
    alive = {t.name for t in threading.enumerate()} & (PIPELINE_THREADS | {"sink:recorder", "audio-file"})
    assert not alive
    rec = read_recording(tmp_path / "out.mp4")
    assert rec.frames >= 5 and rec.audio_seconds == pytest.approx(rec.synced_audio_seconds(25), abs=1e-6)
