"""DiffPoseTalk on CUDA: streaming with CUDA graphs (whole DDIM windows, DDPM denoiser calls) gives what the
eager path gives.
Skipped without CUDA."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _run(model, audio: np.ndarray, graph: bool, kind: str) -> tuple[torch.Tensor, int]:  # type: ignore[no-untyped-def]
    from drivers.face.diffposetalk.sampler import SamplerOptions, torch_noise
    from drivers.face.diffposetalk.streaming import StreamingEngine, StreamingOptions

    gen = torch.Generator(device="cpu").manual_seed(3)
    style = np.linspace(-1, 1, model.args.d_style).astype(np.float32)
    engine = StreamingEngine(model, np.zeros(100, np.float32), style, torch_noise(gen, model.device),
                             SamplerOptions(kind=kind, steps=4 if kind == "ddim" else None), StreamingOptions(3, 2, cuda_graph=graph))
    out = []
    for start in range(0, audio.size, 320):
        engine.feed(audio[start:start + 320])
        while engine.ready():
            out.append(engine.step())
    return torch.cat(out), 0 if engine.graphs is None else engine.graphs.captured()


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_graphed_hops_match_eager(kind: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from bench_diffposetalk import small_args, speechlike

    from drivers.face.diffposetalk.model import DiffPoseTalkModel

    torch.manual_seed(0)
    model = DiffPoseTalkModel(small_args()).cuda().eval()
    audio = speechlike(3.0)
    eager, _ = _run(model, audio, graph=False, kind=kind)
    graphed, n_graphs = _run(model, audio, graph=True, kind=kind)
    assert n_graphs >= 1, "no CUDA graph was captured"
    assert eager.shape == graphed.shape and eager.shape[0] >= 60
    assert float((eager - graphed).abs().max()) <= 1e-4
