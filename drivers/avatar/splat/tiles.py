"""The CPU splatting renderer for live use: a compiled tile rasteriser (numba), as gsplat does it on the GPU.

Project every Gaussian (parallel), sort the visible ones front to back once, append each to the 16x16 tiles its
box touches (so every tile's list is depth-sorted), then rasterise the tiles in parallel with per-pixel early
termination. Same conventions and results as the torch reference (`reference`, which matches gsplat), at a
fraction of the work: no (Gaussian, pixel) pair is ever stored, only evaluated.

Sessions render on threads of their own. A render alone in the process runs the parallel kernels (numba's
pool: the most cores for one stream's frame); a render beside another runs their serial twins on its own
thread, so several sessions share the cores at once instead of queueing for the pool. Both give the same
picture, bit for bit.

Colours are evaluated per Gaussian before rasterising (plain RGB, or SH along mean - camera centre with the
shared `eval_sh`). The kernels compile on first use, which takes seconds; the renderer warms them on a tiny scene
when it is made (at avatar load, before the first frame is due) and keeps how long that took in
`warmup_seconds`. With a disk cache (see `tile_kernels`) later processes load them in a fraction of that.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings
from drivers.avatar.splat.reference import splat_colors

log = logging.getLogger(__name__)

# numba's parallel backend (workqueue) must not be entered from two threads at once: the render that holds this
# runs the parallel kernels; renders beside it (other sessions', on other threads) run the serial twins at once.
_KERNEL_LOCK = threading.Lock()
_ACTIVE_LOCK = threading.Lock()
_active = 0  # renders in flight in this process


@contextlib.contextmanager
def _kernels(serial: bool | None = None) -> Iterator[tuple[Any, Any]]:
    """(project, rasterize): by default the parallel kernels for a render alone in the process (the pool is free
    and no other render wants the cores), else their serial twins, which need no lock; `serial` True or False
    asks for one kind (False waits for the pool)."""
    global _active
    from drivers.avatar.splat import tile_kernels as k

    with _ACTIVE_LOCK:
        _active += 1
        alone = _active == 1
    if serial is None:
        pooled = alone and _KERNEL_LOCK.acquire(blocking=False)
    else:
        pooled = not serial and _KERNEL_LOCK.acquire()
    try:
        yield (k.project, k.rasterize) if pooled else (k.project_serial, k.rasterize_serial)
    finally:
        if pooled:
            _KERNEL_LOCK.release()
        with _ACTIVE_LOCK:
            _active -= 1


def _as_f32(t: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous float32 NumPy view (or copy) of a CPU tensor, reshaped: one kernel signature for all."""
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).reshape(shape).numpy())


class TileSplatRenderer:
    """Compiled tile rasteriser on the CPU; takes Gaussians on any device and returns images on that device."""

    name = "tiles"

    def __init__(self, warm: bool = True) -> None:
        from drivers.avatar.splat import tile_kernels  # ImportError without numba: the caller falls back

        self._k = tile_kernels
        self.timings: dict[str, float] = {}
        """Milliseconds per stage of the last render: project (incl. colours), sort, bin, raster."""
        self.warmup_seconds = 0.0
        """How long the first (compiling, or cache-loading) render took when the renderer was made."""
        self.warmup_compiled = False
        """Whether that render compiled kernels (no usable disk cache) rather than loading them."""
        if warm:
            misses = _compilations()
            t0 = time.perf_counter()
            for serial in (False, True):  # both kinds of kernel, so neither compiles on a live frame
                self._render(*_warmup_scene(), serial=serial)
            self.warmup_seconds = time.perf_counter() - t0
            self.warmup_compiled = _compilations() > misses
            log.info("CPU tile rasteriser ready in %.2f s (%s)", self.warmup_seconds,
                     "compiled" if self.warmup_compiled else "from the disk cache")

    def render(
        self,
        gaussians: Gaussians,
        camera: Camera,
        background: torch.Tensor | None = None,
        settings: RasterSettings | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._render(gaussians, camera, background, settings)

    def _render(self, gaussians: Gaussians, camera: Camera, background: torch.Tensor | None,
                settings: RasterSettings | None, serial: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_grad_enabled() and any(t.requires_grad for t in (gaussians.means, gaussians.quats,
                                                                     gaussians.scales, gaussians.opacities,
                                                                     gaussians.colors)):
            raise ValueError("the tile rasteriser has no gradients; render for training with the torch reference "
                             "(select_renderer(..., differentiable=True))")
        s = settings or RasterSettings()
        k = self._k
        out_dev = gaussians.means.device
        n = len(gaussians)
        W, H = int(camera.width), int(camera.height)
        t0 = time.perf_counter()
        means = _as_f32(gaussians.means, (n, 3))
        quats = _as_f32(gaussians.quats, (n, 4))
        scales = _as_f32(gaussians.scales, (n, 3))
        opac = _as_f32(gaussians.opacities, (n,))
        view = camera.viewmat.detach().to("cpu", torch.float64).reshape(4, 4).numpy()
        K = camera.K.detach().to("cpu", torch.float64).reshape(3, 3).numpy()
        intr = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
        bg = np.zeros(3) if background is None else background.detach().to("cpu", torch.float64).reshape(3).numpy()
        xy = np.empty((n, 2))
        conic = np.empty((n, 3))
        depth = np.empty(n)
        box = np.empty((n, 4), np.int64)
        visible = np.empty(n, np.bool_)
        tiles_x, tiles_y = -(-W // k.TILE), -(-H // k.TILE)
        rgb = np.empty((H, W, 3), np.float32)
        alpha = np.empty((H, W), np.float32)
        with _kernels(serial) as (project, rasterize):
            project(means, quats, scales, opac, view, intr, W, H, float(camera.near), float(camera.far),
                    float(s.eps2d), float(s.min_alpha), float(s.radius_clip), xy, conic, depth, box, visible)
            t1 = time.perf_counter()
            order = k.depth_order(visible, depth)
            t2 = time.perf_counter()
            colors = self._colors(gaussians, camera, order)
            t3 = time.perf_counter()
            offsets, items = k.bin_tiles(box, order, tiles_x, tiles_y)
            t4 = time.perf_counter()
            rasterize(_tile_order(tiles_x * tiles_y), order, xy, conic, opac, box, colors, offsets, items, W, H, tiles_x,
                      bg, float(s.max_alpha), float(s.min_alpha), float(s.min_transmittance), rgb, alpha)
        t5 = time.perf_counter()
        self.timings = {
            "project": (t1 - t0 + t3 - t2) * 1e3,
            "sort": (t2 - t1) * 1e3,
            "bin": (t4 - t3) * 1e3,
            "raster": (t5 - t4) * 1e3,
        }
        return torch.from_numpy(rgb).to(out_dev), torch.from_numpy(alpha).to(out_dev)

    @staticmethod
    def _colors(gaussians: Gaussians, camera: Camera, order: np.ndarray) -> np.ndarray:
        """(M,3) float32 RGB of the visible Gaussians in `order`: plain colours, or SH evaluated per Gaussian."""
        if gaussians.sh_degree is None:
            cols = gaussians.colors.detach()
            if cols.dim() != 2 or cols.shape[-1] != 3:
                raise ValueError(f"plain colours must be (N,3) when sh_degree is None, got {tuple(cols.shape)}")
            return np.take(cols.to("cpu", torch.float32).numpy(), order, axis=0)
        # In float32 like everything else here (the reference works in float64 when given float64).
        g32 = Gaussians(gaussians.means.detach().float(), gaussians.quats, gaussians.scales, gaussians.opacities,
                        gaussians.colors.detach().float(), gaussians.sh_degree)
        index = torch.from_numpy(order).to(gaussians.means.device)
        return _as_f32(splat_colors(g32, camera, index), (len(order), 3))


@functools.lru_cache(maxsize=8)
def _tile_order(n_tiles: int) -> np.ndarray:
    from drivers.avatar.splat.tile_kernels import spread_order

    return spread_order(n_tiles)


def _compilations() -> int:
    """How many kernel compilations this process has done so far (numba counts cache misses)."""
    from drivers.avatar.splat import tile_kernels as k

    stats = (getattr(fn, "stats", None) for fn in (k.project, k.project_serial, k.depth_order, k.bin_tiles,
                                                   k.rasterize, k.rasterize_serial))
    return sum(sum(getattr(st, "cache_misses", {}).values()) for st in stats)


def _warmup_scene() -> tuple[Gaussians, Camera, torch.Tensor, RasterSettings]:
    """Two overlapping Gaussians in front of a 20x18 camera (two tiles wide, a partial tile at each edge)."""
    view = torch.eye(4)
    view[2, 3] = 2.0
    K = torch.tensor([[20.0, 0.0, 10.0], [0.0, 20.0, 9.0], [0.0, 0.0, 1.0]])
    g = Gaussians(
        torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.2]]),
        torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.9, 0.1, 0.0, 0.2]]),
        torch.full((2, 3), 0.3),
        torch.tensor([0.9, 0.5]),
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    )
    return g, Camera(view, K, 20, 18), torch.tensor([0.0, 0.5, 0.0]), RasterSettings()
