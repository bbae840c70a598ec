"""A whole FlashAvatar frame as one CUDA graph around gsplat's kernels.

gsplat's `rasterization()` reads the number of tile intersections back to the host to size its sort. That
stalls the CPU once per frame and rules out graph capture, so at small sizes the frame rate is bound by
launch overhead, not by the GPU. Here the intersection list has a fixed capacity instead: each Gaussian's tiles
go into slots found by a prefix sum, unused slots get a key that sorts before every real one (outside every
tile's range, so the rasteriser never reads them), and the per-tile offsets come from a binary search. The rest
is gsplat's own projection, SH and rasterisation kernels with `rasterization()`'s arguments (classic mode,
unpacked), so the pixels are the same. One replay runs deformation → projection → SH → tiles → sort →
rasterisation → uint8. The true intersection count comes back with every frame; a frame that did not fit is
rendered again after the capacity grows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from drivers.avatar.splat.gaussians import RasterSettings
from drivers.cuda_graphs import capturing

log = logging.getLogger(__name__)

TILE = 16
PAD_KEY = -1  # sorts before every (tile << 32 | depth) key, so padding lands before tile 0's range
HEADROOM = 1.5  # capacity = intersections seen x HEADROOM (+ a floor), grown the same way on overflow
MIN_CAPACITY = 1 << 16


def intersect_fixed(
    means2d: torch.Tensor,
    radii: torch.Tensor,
    depths: torch.Tensor,
    tile_width: int,
    tile_height: int,
    slots: torch.Tensor,
    tiles: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gsplat's `isect_tiles` + `isect_offset_encode` for one image with a fixed-size output and no host sync.

    means2d (N,2) float32, radii (N,2) int32, depths (N,) float32; `slots` = arange(capacity) and
    `tiles` = arange(tile_width * tile_height) (int64, made once). Returns tile offsets (tile_height,
    tile_width) int32, flatten ids (capacity,) int32 sorted by (tile, depth) with padding first, and the true
    intersection count (1,) int64. Tiles are covered as gsplat's kernel covers them (the same float arithmetic),
    and ties keep gsplat's order (Gaussian index, then tiles row by row) through a stable sort.
    """
    n = means2d.shape[0]
    r = radii.to(torch.float32)
    valid = (r[:, 0] > 0) & (r[:, 1] > 0)
    tx, ty = means2d[:, 0] / TILE, means2d[:, 1] / TILE
    rx, ry = r[:, 0] / TILE, r[:, 1] / TILE
    x0 = torch.floor(tx - rx).clamp(0, tile_width).to(torch.int64)
    x1 = torch.ceil(tx + rx).clamp(0, tile_width).to(torch.int64)
    y0 = torch.floor(ty - ry).clamp(0, tile_height).to(torch.int64)
    y1 = torch.ceil(ty + ry).clamp(0, tile_height).to(torch.int64)
    w = x1 - x0
    counts = torch.where(valid, w * (y1 - y0), 0)
    ends = torch.cumsum(counts, 0)
    owner = torch.searchsorted(ends, slots, right=True)  # the Gaussian whose run of slots holds each slot
    real = owner < n
    g = owner.clamp(max=n - 1)
    local = slots - (ends[g] - counts[g])
    width = w[g].clamp(min=1)
    tile = (y0[g] + local // width) * tile_width + x0[g] + local % width
    depth_bits = depths.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    keys = torch.where(real, (tile << 32) | depth_bits[g], PAD_KEY)
    sorted_keys, order = torch.sort(keys, stable=True)
    flatten_ids = g[order].to(torch.int32)
    offsets = torch.searchsorted(sorted_keys >> 32, tiles, out_int32=True).reshape(tile_height, tile_width)
    return offsets, flatten_ids, ends[-1:]


class GsplatFrameGraph:
    """Captures and replays one frame: `deform()` → posed Gaussians → gsplat → uint8 image on the device.

    `deform` reads the avatar's static input buffer and returns (means, quats, scales, viewmat); the graph's
    outputs (`rgb_u8`, `alpha_u8`, `count`) are overwritten by each replay, so copy them out in stream order.
    """

    def __init__(
        self,
        deform: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
        opacities: torch.Tensor,
        colors: torch.Tensor,
        sh_degree: int | None,
        K: torch.Tensor,
        width: int,
        height: int,
        near: float,
        far: float,
        background: torch.Tensor | None,
        settings: RasterSettings,
        with_alpha: bool,
    ) -> None:
        from drivers.avatar.splat.gsplat_backend import import_gsplat

        wrapper = import_gsplat().cuda._wrapper
        self._project = wrapper.fully_fused_projection
        self._sh = wrapper.spherical_harmonics
        self._rasterize = wrapper.rasterize_to_pixels
        self._deform = deform
        self.device = opacities.device
        self.opacities = opacities.reshape(-1).to(torch.float32)
        self.colors = colors
        self.sh_degree = sh_degree
        self.K = K.to(self.device, torch.float32).reshape(1, 3, 3)
        self.width, self.height = int(width), int(height)
        self.near, self.far = float(near), float(far)
        self.background = None if background is None else background.to(self.device, torch.float32).reshape(1, 3)
        self.settings = settings
        self.with_alpha = with_alpha
        self.tile_width = math.ceil(self.width / TILE)
        self.tile_height = math.ceil(self.height / TILE)
        self._tiles = torch.arange(self.tile_width * self.tile_height, device=self.device)
        self._slots = torch.empty(0, dtype=torch.int64, device=self.device)
        self._graph: Any = None
        self.rgb_u8: torch.Tensor
        self.alpha_u8: torch.Tensor | None = None
        self.count: torch.Tensor
        self.capacity = 0
        self.regrown = 0
        """How often a frame overflowed and the graph was captured again."""
        with torch.no_grad():  # one eager frame of the current input sizes the list
            needed = int(self._frame(torch.arange(MIN_CAPACITY, device=self.device))[2])
        self.capture(max(MIN_CAPACITY, int(needed * HEADROOM)))

    def _frame(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The frame's work with room for `slots.numel()` intersections: uint8 RGB, uint8 alpha, true count."""
        means, quats, scales, viewmat = self._deform()
        s = self.settings
        viewmats = viewmat.to(torch.float32).reshape(1, 4, 4)
        radii, means2d, depths, conics, _ = self._project(
            means, None, quats, scales, viewmats, self.K, self.width, self.height, eps2d=s.eps2d,
            near_plane=self.near, far_plane=self.far, radius_clip=s.radius_clip, packed=False,
            calc_compensations=False, opacities=self.opacities,
        )
        if self.sh_degree is None:
            colors = self.colors.expand(1, *self.colors.shape)
        else:
            rot, trans = viewmats[0, :3, :3], viewmats[0, :3, 3]
            campos = -(rot.T @ trans)  # the camera centre of a rigid world→camera matrix, without a host sync
            dirs = means[None] - campos
            shs = self.colors.expand(1, *self.colors.shape)
            colors = torch.clamp_min(self._sh(self.sh_degree, dirs, shs, masks=(radii > 0).all(dim=-1)) + 0.5, 0.0)
        offsets, flatten_ids, count = intersect_fixed(means2d[0], radii[0], depths[0], self.tile_width,
                                                      self.tile_height, slots, self._tiles)
        rgb, alpha = self._rasterize(
            means2d, conics, colors, self.opacities[None], self.width, self.height, TILE, offsets[None],
            flatten_ids, backgrounds=self.background, packed=False,
        )
        u8 = torch.clamp(rgb[0], 0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8)  # round half up, as on the CPU
        a8 = torch.clamp(alpha[0, ..., 0], 0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8) if self.with_alpha else None
        return u8, a8, count

    def capture(self, capacity: int) -> None:
        """(Re)capture the graph with room for `capacity` intersections."""
        torch.cuda.current_stream(self.device).synchronize()  # the old graph's replays (this stream) are done
        self._graph = None
        self.capacity = int(capacity)
        self._slots = torch.arange(self.capacity, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                self._frame(self._slots)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with capturing(graph):
            self.rgb_u8, self.alpha_u8, self.count = self._frame(self._slots)
        self._graph = graph
        log.info("frame graph captured: %dx%d, room for %d tile intersections", self.width, self.height,
                 self.capacity)

    def replay(self) -> None:
        self._graph.replay()

    def fits(self, count: int) -> bool:
        return count <= self.capacity

    def grow(self, count: int) -> None:
        """Capture again with room for `count` intersections and headroom (after a frame overflowed)."""
        self.regrown += 1
        log.info("a frame needed %d tile intersections (room for %d): capturing the frame graph again", count,
                 self.capacity)
        self.capture(max(MIN_CAPACITY, int(count * HEADROOM)))
