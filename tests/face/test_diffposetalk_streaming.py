"""Streaming DiffPoseTalk on the tiny golden checkpoint: frame count and timing, continuity across hops,
chunking independence, full-lookahead streaming equal to whole-clip generation, and the threaded driver."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.core.face_params import FaceParams
from bridge.core.interfaces import AudioChunk, FaceDriver
from drivers.face.diffposetalk.checkpoint import load_checkpoint, load_stats
from drivers.face.diffposetalk.model import DiffPoseTalkModel
from drivers.face.diffposetalk.offline import generate, normalise_shape
from drivers.face.diffposetalk.sampler import SamplerOptions, fixed_noise, recorded_noise
from drivers.face.diffposetalk.streaming import DiffPoseTalkFaceDriver, StreamingEngine, StreamingOptions
from tests.golden_files import require

FAST = SamplerOptions(kind="ddim", steps=4, cfg_scale=(1.15, 3.0))


def _file(name: str) -> Path:
    return require("diffposetalk", name)[0]


@pytest.fixture(scope="module")
def tiny() -> tuple[DiffPoseTalkModel, dict, dict]:
    model = DiffPoseTalkModel.from_checkpoint(load_checkpoint(_file("dpt_tiny_head.pt")))
    with np.load(_file("golden_head.npz")) as g:
        arrays = {k: g[k] for k in g.files}
    return model, load_stats(_file("stats_head.npz")), arrays


def _stream(model, stats, g, opts: StreamingOptions, sampler: SamplerOptions, noise, chunk: int) -> np.ndarray:
    eng = StreamingEngine(model, normalise_shape(g["shape"], stats), g["style"], noise, sampler, opts)
    return eng.stream(g["audio"][: 16000 * 4], chunk).numpy()


def test_full_lookahead_streaming_equals_offline(tiny) -> None:
    model, stats, g = tiny
    eng = StreamingEngine(model, normalise_shape(g["shape"], stats), g["style"],
                          recorded_noise(torch.from_numpy(g["noise"])), SamplerOptions(cfg_scale=(1.15, 3.0)),
                          StreamingOptions(hop_frames=100, lookahead_frames=10**6, audio_context_s=1e9))
    for i in range(0, len(g["audio"]), 4000):
        eng.feed(g["audio"][i:i + 4000])
        assert not eng.ready()
    motion = torch.cat(eng.finish()).numpy()
    assert motion.shape == g["motion"].shape
    assert np.abs(motion - g["motion"]).max() <= 1e-4


def test_frames_per_second_and_chunking_independence(tiny) -> None:
    model, stats, g = tiny
    opts = StreamingOptions(hop_frames=5, lookahead_frames=3, audio_context_s=1.0)
    a = _stream(model, stats, g, opts, FAST, fixed_noise(3, (1, 100, 54)), chunk=1234)
    b = _stream(model, stats, g, opts, FAST, fixed_noise(3, (1, 100, 54)), chunk=16000)
    assert a.shape == (100, 54)  # 4 s of audio at 25 fps
    assert np.abs(a - b).max() < 1e-5


def test_hop_boundaries_are_continuous(tiny) -> None:
    model, stats, g = tiny
    hop = 5
    m = _stream(model, stats, g, StreamingOptions(hop, 3, 1.0), FAST, fixed_noise(4, (1, 100, 54)), chunk=640)
    steps = np.abs(np.diff(m, axis=0)).mean(axis=1)
    at_boundary = steps[hop - 1::hop]
    inside = np.delete(steps, np.arange(hop - 1, len(steps), hop))
    # A join is no rougher than an ordinary frame-to-frame step.
    assert at_boundary.mean() <= 1.5 * inside.mean()
    assert at_boundary.max() <= 3.0 * np.percentile(inside, 95)


def test_driver_streams_frames_on_the_clock(tiny) -> None:
    model, _stats, g = tiny
    driver = DiffPoseTalkFaceDriver(stats=_file("stats_head.npz"), style=None, shape=None, sampler="ddim", steps=2,
                                    hop_frames=4, lookahead_frames=2, audio_context_s=0.5, model=model)
    try:
        assert isinstance(driver, FaceDriver)
        assert driver.latency == pytest.approx(6 / 25)
        driver.reset(10.0)
        audio = g["audio"][: 16000 * 2]
        frames: list[FaceParams] = []
        for i in range(0, len(audio), 800):
            frames += driver.push(AudioChunk(audio[i:i + 800], pts=10.0 + i / 16000))
        deadline = time.monotonic() + 60
        while len(frames) < 44 and time.monotonic() < deadline:  # frames arrive without a flush
            frames += driver.push(AudioChunk(np.zeros(0, np.float32), pts=12.0))
            time.sleep(0.02)
        assert len(frames) >= 44
        frames += driver.flush()
        assert len(frames) == 50
        pts = np.array([f.pts for f in frames])
        np.testing.assert_allclose(pts, 10.0 + np.arange(50) / 25, atol=1e-9)
        assert all(f.audio_time == f.pts for f in frames)
        assert all(np.all(f.expression[50:] == 0) and np.all(np.isfinite(f.to_vector())) for f in frames)
        assert not np.allclose(frames[0].expression, frames[-1].expression)
    finally:
        driver.close()


def test_driver_rejects_wrong_frame_rate(tiny) -> None:
    model, _stats, _g = tiny
    with pytest.raises(ValueError, match="25 fps"):
        DiffPoseTalkFaceDriver(stats=_file("stats_head.npz"), model=model, fps=30)


def test_offline_ddim_is_deterministic(tiny) -> None:
    model, stats, g = tiny
    audio = g["audio"][:16000]
    r1 = generate(model, audio, g["shape"], g["style"], stats, fixed_noise(5, (1, 100, 54)), FAST)
    r2 = generate(model, audio, g["shape"], g["style"], stats, fixed_noise(5, (1, 100, 54)), FAST)
    assert r1.motion.shape == (25, 54)
    np.testing.assert_array_equal(r1.motion, r2.motion)
