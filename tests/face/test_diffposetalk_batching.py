"""DiffPoseTalk hops of many sessions as one forward (the golden tiny checkpoint, on the CPU): a hop run in a
batch gives the frames it gives alone, drivers sharing a model cache share its weights and batcher and keep
their own streams, and a batch never waits past the earliest deadline of its hops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.core.face_params import FaceParams
from bridge.core.interfaces import AudioChunk
from bridge.core.models import ModelCache
from drivers.face.diffposetalk.batching import HopBatcher, bucket, close_time
from drivers.face.diffposetalk.checkpoint import load_checkpoint, load_stats
from drivers.face.diffposetalk.hops import run_hops
from drivers.face.diffposetalk.model import DiffPoseTalkModel
from drivers.face.diffposetalk.offline import normalise_shape
from drivers.face.diffposetalk.sampler import SamplerOptions, fixed_noise
from drivers.face.diffposetalk.streaming import DiffPoseTalkFaceDriver, StreamingEngine, StreamingOptions
from drivers.memory import tensor_bytes
from tests.golden_files import require

FAST = SamplerOptions(kind="ddim", steps=3, cfg_scale=(1.15, 3.0))
OPTS = StreamingOptions(hop_frames=3, lookahead_frames=1, audio_context_s=1.0)
HOPS = 8
TOLERANCE = 1e-5  # a batched matrix product may sum in another order than a single row's


@pytest.fixture(scope="module")
def tiny() -> tuple[DiffPoseTalkModel, dict, dict]:
    ckpt, stats, golden = require("diffposetalk", "dpt_tiny_head.pt", "stats_head.npz", "golden_head.npz")
    model = DiffPoseTalkModel.from_checkpoint(load_checkpoint(ckpt))
    with np.load(golden) as g:
        arrays = {k: g[k] for k in g.files}
    return model, load_stats(stats), arrays


def _engines(model: DiffPoseTalkModel, stats: dict, g: dict) -> list[StreamingEngine]:
    """Two sessions that differ in everything they own: shape, style, seed and speech."""
    shapes = [g["shape"], g["shape"] * 0.5]
    styles = [g["style"], -g["style"]]
    engines = []
    for i in range(2):
        eng = StreamingEngine(model, normalise_shape(shapes[i], stats), styles[i], fixed_noise(10 + i, (1, 100, 54)),
                              FAST, OPTS)
        eng.feed(g["audio"][8000 * i: 8000 * i + 16000 * 2])
        engines.append(eng)
    return engines


def test_hops_batched_give_the_frames_of_hops_run_alone(tiny) -> None:
    model, stats, g = tiny
    alone, batched = _engines(model, stats, g), _engines(model, stats, g)
    for _ in range(HOPS):
        want = [eng.step() for eng in alone]
        hops = [eng.prepare() for eng in batched]
        assert hops[0] is not None and hops[1] is not None
        assert hops[0].batch_key() == hops[1].batch_key()
        rows = run_hops(model, [hops[0], hops[1]], graphs=None, pad_to=4)  # padded as a CUDA graph size would be
        got = [eng.complete(hop, *row) for eng, hop, row in zip(batched, hops, rows)]
        for w, o in zip(want, got):
            assert w.shape == o.shape == (3, 54)
            assert torch.allclose(w, o, atol=TOLERANCE, rtol=0)
    assert not torch.allclose(want[0], want[1], atol=1e-3)  # the two sessions really differ


def test_the_batcher_runs_the_hops_of_its_members_together(tiny) -> None:
    model, stats, g = tiny
    alone, batched = _engines(model, stats, g), _engines(model, stats, g)
    want = [[eng.step() for _ in range(HOPS)] for eng in alone]
    batcher = HopBatcher(model, window_s=60.0)  # closes only when both members have a hop waiting
    got: list[list[torch.Tensor]] = [[], []]
    for _ in batched:
        batcher.join()

    def session(i: int) -> None:
        for _ in range(HOPS):
            got[i].append(batched[i].step(run=lambda hop: batcher.run(hop, deadline=time.monotonic() + 60.0)))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert max(r.waited for r in batcher.history) < 30  # each closed when both hops were in, not by its window
    for _ in batched:
        batcher.leave()
    assert [r.size for r in batcher.history] == [2] * HOPS
    for w, o in zip(want, got):
        assert len(o) == HOPS
        for a, b in zip(w, o):
            assert torch.allclose(a, b, atol=TOLERANCE, rtol=0)


def test_a_batch_never_waits_past_its_earliest_deadline(tiny) -> None:
    model, stats, g = tiny
    engine = _engines(model, stats, g)[0]
    batcher = HopBatcher(model, window_s=60.0)
    batcher.join()
    batcher.join()  # a second member that never submits: only the deadline can close the batch
    hop = engine.prepare()
    assert hop is not None
    deadline = time.monotonic() + 0.2
    x0, feat = batcher.run(hop, deadline)
    assert batcher.history[-1].waited < 30  # far below the window: the deadline closed the batch
    assert x0.shape == (1, 100, 54) and feat.shape[:2] == (1, 100)
    assert batcher.history[-1].size == 1 and batcher.history[-1].earliest_deadline == deadline
    batcher.leave()
    batcher.leave()


def test_close_time_is_the_window_or_earlier_for_a_deadline() -> None:
    assert close_time(10.0, [20.0], window_s=0.004, cost_s=0.001) == pytest.approx(10.004)
    # The earliest deadline less the batch's cost comes first: it still finishes in time.
    assert close_time(10.0, [10.05, 10.02], window_s=1.0, cost_s=0.005) == pytest.approx(10.015)
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 32)] == [1, 2, 4, 8, 8, 16, 32]


def _stream(driver: DiffPoseTalkFaceDriver, audio: np.ndarray) -> list[FaceParams]:
    driver.reset(0.0)
    frames: list[FaceParams] = []
    for i in range(0, len(audio), 1600):
        frames += driver.push(AudioChunk(audio[i:i + 1600], pts=i / 16000))
    return frames + driver.flush()


def test_drivers_sharing_a_cache_share_the_model_and_keep_their_own_frames(tiny, tmp_path: Path) -> None:
    _model, _stats, g = tiny
    ckpt, stats = require("diffposetalk", "dpt_tiny_head.pt", "stats_head.npz")
    style = tmp_path / "style.npy"
    np.save(style, g["style"])
    settings = {"checkpoint": ckpt, "stats": stats, "style": style, "sampler": "ddim", "steps": 3,
                "hop_frames": 3, "lookahead_frames": 1, "audio_context_s": 1.0, "device": "cpu"}
    cache = ModelCache()
    shared = [DiffPoseTalkFaceDriver(**settings, seed=seed, models=cache) for seed in (1, 2)]  # type: ignore[arg-type]
    own = [DiffPoseTalkFaceDriver(**settings, seed=seed) for seed in (1, 2)]  # type: ignore[arg-type]
    try:
        assert shared[0].model is shared[1].model and own[0].model is not shared[0].model
        assert cache.loads == 2  # the model and its batcher
        # A further driver costs its own state only; one that loaded its own model pays for the weights too.
        assert tensor_bytes(shared[1], shared=[shared[0].model]) < 2**20
        assert tensor_bytes(own[1], shared=[shared[0].model]) > 4 * 2**20
        audio = g["audio"][:16000]
        results: dict[int, list[FaceParams]] = {}
        threads = [threading.Thread(target=lambda i=i: results.update({i: _stream(shared[i], audio)}))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i in range(2):
            want = _stream(own[i], audio)
            assert len(results[i]) == len(want) == 25
            for a, b in zip(want, results[i]):
                np.testing.assert_allclose(a.to_vector(), b.to_vector(), atol=1e-4)
        differ = [np.abs(a.to_vector() - b.to_vector()).max() for a, b in zip(results[0], results[1])]
        assert max(differ) > 1e-3  # different seeds: each driver kept its own noise
    finally:
        for d in shared + own:
            d.close()
