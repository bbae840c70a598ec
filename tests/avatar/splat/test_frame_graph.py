"""The fixed-capacity tile intersection list must equal what gsplat's `isect_tiles` + `isect_offset_encode`
produce: the same tiles per Gaussian, the same (tile, depth) order with ties in Gaussian order, the same offsets.
The reference below follows gsplat's kernel step by step in float32; the GPU test compares with gsplat itself."""

from __future__ import annotations

import math

import numpy as np
import torch

from drivers.avatar.splat.frame_graph import TILE, intersect_fixed


def _reference(means2d: np.ndarray, radii: np.ndarray, depths: np.ndarray, tw: int, th: int
               ) -> tuple[list[int], np.ndarray]:
    f32 = np.float32
    entries: list[tuple[int, int]] = []
    for i in range(len(means2d)):
        rx, ry = f32(radii[i, 0]), f32(radii[i, 1])
        if rx <= 0 or ry <= 0:
            continue
        tx, ty = f32(means2d[i, 0]) / f32(TILE), f32(means2d[i, 1]) / f32(TILE)
        trx, try_ = rx / f32(TILE), ry / f32(TILE)
        x0 = min(max(0, int(np.floor(f32(tx - trx)))), tw)
        y0 = min(max(0, int(np.floor(f32(ty - try_)))), th)
        x1 = min(max(0, int(np.ceil(f32(tx + trx)))), tw)
        y1 = min(max(0, int(np.ceil(f32(ty + try_)))), th)
        bits = int(np.float32(depths[i]).view(np.uint32))
        for y in range(y0, y1):
            for x in range(x0, x1):
                entries.append(((y * tw + x) << 32 | bits, i))
    entries.sort(key=lambda e: e[0])  # stable, like the radix sort
    tiles = np.array([k >> 32 for k, _ in entries], dtype=np.int64)
    offsets = np.searchsorted(tiles, np.arange(tw * th), side="left").astype(np.int32)
    return [i for _, i in entries], offsets.reshape(th, tw)


def _scene(n: int, width: int, height: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    means = rng.uniform([-60, -60], [width + 60, height + 60], size=(n, 2)).astype(np.float32)
    radii = rng.integers(0, 48, size=(n, 2)).astype(np.int32)
    radii[rng.random(n) < 0.1] = 0  # culled
    depths = rng.uniform(0.5, 3.0, size=n).astype(np.float32)
    depths[rng.random(n) < 0.2] = 1.25  # ties: their order must follow the Gaussian index
    return torch.from_numpy(means), torch.from_numpy(radii), torch.from_numpy(depths)


def test_matches_gsplat_order_and_offsets() -> None:
    width, height = 200, 136  # not a multiple of the tile size
    tw, th = math.ceil(width / TILE), math.ceil(height / TILE)
    means, radii, depths = _scene(600, width, height, seed=1)
    ref_ids, ref_offsets = _reference(means.numpy(), radii.numpy(), depths.numpy(), tw, th)
    capacity = len(ref_ids) + 777
    offsets, flatten, count = intersect_fixed(means, radii, depths, tw, th, torch.arange(capacity),
                                              torch.arange(tw * th))
    assert int(count) == len(ref_ids)
    pad = capacity - len(ref_ids)
    assert flatten.dtype == torch.int32 and offsets.dtype == torch.int32 and offsets.shape == (th, tw)
    assert flatten[pad:].tolist() == ref_ids
    np.testing.assert_array_equal(offsets.numpy() - pad, ref_offsets)
    assert int(offsets.min()) == pad  # padding sits before tile 0's range: the rasteriser never reads it


def test_overflow_reports_the_true_count() -> None:
    means, radii, depths = _scene(300, 128, 128, seed=2)
    tw = th = 8
    ref_ids, _ = _reference(means.numpy(), radii.numpy(), depths.numpy(), tw, th)
    offsets, flatten, count = intersect_fixed(means, radii, depths, tw, th, torch.arange(len(ref_ids) // 2),
                                              torch.arange(tw * th))
    assert int(count) == len(ref_ids) > flatten.numel()
    assert int(offsets.max()) <= flatten.numel()


def test_nothing_visible() -> None:
    means, radii, depths = _scene(50, 64, 64, seed=3)
    offsets, _, count = intersect_fixed(means, torch.zeros_like(radii), depths, 4, 4, torch.arange(100),
                                        torch.arange(16))
    assert int(count) == 0
    assert (offsets == 100).all()  # every tile's range is empty
