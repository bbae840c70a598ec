"""Batched DiffPoseTalk hops on CUDA: the batcher's CUDA graphs (one per batch size, on its high-priority
stream) give each session the frames its hops give alone and eagerly. Skipped without CUDA."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SESSIONS = 3  # a batch of 3 runs padded to the graph of size 4


def test_batched_graphed_hops_match_eager_hops_alone() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from bench_diffposetalk import small_args, speechlike

    from drivers.face.diffposetalk.batching import HopBatcher
    from drivers.face.diffposetalk.model import DiffPoseTalkModel
    from drivers.face.diffposetalk.sampler import SamplerOptions, fixed_noise
    from drivers.face.diffposetalk.streaming import StreamingEngine, StreamingOptions

    torch.manual_seed(0)
    model = DiffPoseTalkModel(small_args()).cuda().eval()
    style = np.linspace(-1, 1, model.args.d_style).astype(np.float32)
    sampler = SamplerOptions(kind="ddim", steps=4)

    def engine(i: int, graph: bool) -> StreamingEngine:
        shape = np.full(100, 0.1 * i, np.float32)
        noise = fixed_noise(i, (1, model.args.n_motions, model.args.motion_dim))
        eng = StreamingEngine(model, shape, style * (i + 1), noise, sampler, StreamingOptions(3, 1, cuda_graph=graph))
        eng.feed(speechlike(2.0, seed=i))
        return eng

    alone = [engine(i, graph=False) for i in range(SESSIONS)]
    want = []
    for eng in alone:
        out = []
        while eng.ready():
            out.append(eng.step())
        want.append(torch.cat(out))
    batcher = HopBatcher(model, window_s=30.0)
    for _ in range(SESSIONS):
        batcher.join()
    batched = [engine(i, graph=False) for i in range(SESSIONS)]
    got: list[list[torch.Tensor]] = [[] for _ in range(SESSIONS)]

    def session(i: int) -> None:
        eng = batched[i]
        while eng.ready():
            got[i].append(eng.step(run=lambda hop: batcher.run(hop, deadline=time.monotonic() + 30.0)))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for _ in range(SESSIONS):
        batcher.leave()
    assert batcher.graphs is not None and batcher.graphs.captured() >= 2  # HuBERT and the window, at size 4
    assert max(r.size for r in batcher.history) == SESSIONS
    for w, g in zip(want, got):
        g_all = torch.cat(g)
        assert w.shape == g_all.shape and w.shape[0] >= 40
        assert float((w - g_all).abs().max()) <= 1e-4
