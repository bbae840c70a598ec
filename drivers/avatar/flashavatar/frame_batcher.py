"""One render for the FlashAvatar frames of many sessions that fall due together.

Sessions showing one avatar share its model (`avatar.load_model`). Alone, each session's frame costs its own
deformation pass, rasterisation and launches; from `batched_from` members on, the frames that fall due within a
short window are deformed in one pass and rasterised in one gsplat call, each from its session's own view and
head motion (as `offline.render_batch`). Measured on an H100 at 512² (`bench/bench_render_batch.py`, ms per
tick of N frames, each alone / batched): N=1 0.94 / 3.78, N=8 6.87 / 5.20, N=16 14.62 / 6.72, N=32 28.84 /
15.02, so batching pays from 8 frames; a batch that gathered fewer renders them one after the other on each
avatar's own path (on CUDA its frame graph).

Below `batched_from` members the avatars render on their sessions' threads as before and the batcher's thread
idles. Sessions' frames are not aligned: each comes its pipeline's render lead before its presentation time, and
the window (`window_s`) is what gathers them; the pipeline's render lead grows by the wait (it follows the
render time it measures, up to one frame period), so a frame can still be done by its presentation time while
the wait and the batch together take less than that. On CUDA the batches run on a high-priority stream and each
session's stream waits for its frame's batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from bridge.core.face_params import FaceParams
from bridge.core.interfaces import NeckPose, RenderedImage
from drivers.avatar.flashavatar.model import FlashAvatarModel
from drivers.avatar.flashavatar.pending import PendingFrame
from drivers.avatar.scene.layers import DeviceRegion
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings, SplatRenderer
from drivers.avatar.splat.gsplat_backend import GsplatRenderer
from drivers.batch_window import BatchWindow, Request
from drivers.cuda_streams import realtime_stream

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 0.015  # how long the first frame of a batch waits for others at most
DEFAULT_BATCHED_FROM = 8  # members (and frames in a batch) from which frames render together
MAX_BATCH = 32  # frames one batch takes
PASS = 16  # frames per deformation/rasterisation pass (bounds the device memory of a pass)


class BatchedAvatar(Protocol):
    """What the batcher needs of a member avatar (`FlashAvatarAvatar`): its model, view and raster settings to
    render it in a batch, and its own path to render it alone."""

    device: str
    model: FlashAvatarModel
    width: int
    height: int
    base_camera: Camera
    renderer: SplatRenderer
    background: torch.Tensor
    settings: RasterSettings
    transparent: bool
    origin: tuple[int, int]
    batch_key: Hashable
    """Avatars with equal keys (one model, size, intrinsics, background) render in one pass."""

    def pack(self, params: FaceParams) -> torch.Tensor: ...

    def deform_batch(self, packed: torch.Tensor, views: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def neck_pose(self, params: FaceParams) -> NeckPose | None: ...

    def placed(self, image: RenderedImage, params: FaceParams) -> RenderedImage: ...

    def submit_alone(self, params: FaceParams) -> PendingFrame: ...

    def region_alone(self, params: FaceParams) -> DeviceRegion: ...


@dataclass(kw_only=True)
class _Frame(Request):
    avatar: BatchedAvatar
    params: FaceParams
    packed: torch.Tensor  # `avatar.pack(params)`, made on the session's thread (a bad frame fails there)
    on_device: bool = False  # a DeviceRegion for a scene compositing on the device, else a host image
    image: RenderedImage | None = None
    region: DeviceRegion | None = None
    finished: Any = None  # torch.cuda.Event on the batcher's stream: the frame's work is done
    fresh: bool = False  # the region's tensors were made by this batch (the caller's stream must own them)


def _u8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → uint8 rounded half up, on the tensor's device (as the live path converts)."""
    return torch.clamp(x, 0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8)


def render_frames(avatar: BatchedAvatar, packed: torch.Tensor, views: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """B frames of `avatar`'s model, packed on the host (`avatar.pack`), each seen through its base view `views`
    (B,4,4) and moved by its head motion: one deformation pass and one gsplat call (with the CPU renderer each
    frame rasterises alone). → rgb (B,H,W,3) and alpha (B,H,W) in [0, 1] on the device, through `avatar`'s
    intrinsics, size, background and settings."""
    dev = torch.device(avatar.device)
    cuda = dev.type == "cuda"
    dev_in = (packed.pin_memory() if cuda else packed).to(dev, non_blocking=cuda)
    m, base = avatar.model, avatar.base_camera
    b = packed.shape[0]
    with torch.no_grad():
        means, quats, scales, viewmats = avatar.deform_batch(dev_in, views.to(dev, non_blocking=cuda))
        cam = Camera(base.viewmat, base.K, avatar.width, avatar.height, base.near, base.far)
        if isinstance(avatar.renderer, GsplatRenderer):
            g = Gaussians(means, quats, scales, m.opacities, m.sh, m.sh_degree)
            return avatar.renderer.render_batch(g, viewmats, cam, avatar.background, avatar.settings)
        pairs = [avatar.renderer.render(Gaussians(means[i], quats[i], scales[i], m.opacities, m.sh, m.sh_degree),
                                        Camera(viewmats[i], cam.K, cam.width, cam.height, cam.near, cam.far),
                                        avatar.background, avatar.settings) for i in range(b)]
    return (torch.stack([p[0] for p in pairs]),
            torch.stack([p[1] for p in pairs]).reshape(b, avatar.height, avatar.width))


class FrameBatcher(BatchWindow[_Frame]):
    """Renders the frames of the member avatars of one model together (see the module docstring)."""

    thread_name = "flashavatar-frames"
    what = "FlashAvatar session"

    def __init__(self, model: FlashAvatarModel, window_s: float = DEFAULT_WINDOW_S,
                 batched_from: int = DEFAULT_BATCHED_FROM, max_batch: int = MAX_BATCH, priority: bool = True) -> None:
        super().__init__(window_s, max_batch)
        if batched_from < 1:
            raise ValueError("batched_from is at least 1")
        self.model = model
        self.batched_from = batched_from
        self.device = model.device
        self.stream: Any = realtime_stream(model.device, priority) if model.device.type == "cuda" else None
        self.frames_batched = 0
        """Frames rendered in a batch of at least `batched_from` (the rest rendered one after the other)."""

    @property
    def batching(self) -> bool:
        """Whether members hand their frames here (enough of them share the model), or render them alone."""
        return self.members >= self.batched_from

    def _window(self) -> float:
        return self.window_s if self._members >= self.batched_from else 0.0

    # ------------------------------------------------------------------------------------- members' calls
    def render(self, avatar: BatchedAvatar, params: FaceParams, deadline: float = math.inf) -> RenderedImage:
        """The frame's host image, rendered in the next batch (blocks the calling session's thread)."""
        req = self._wait(_Frame(deadline=deadline, avatar=avatar, params=params, packed=avatar.pack(params)))
        assert req.image is not None
        return req.image

    def render_on_device(self, avatar: BatchedAvatar, params: FaceParams, deadline: float = math.inf
                         ) -> DeviceRegion:
        """The frame's region left on the device (valid until the avatar's next frame); the calling thread's
        stream is ordered after the batch's work and owns the region's memory."""
        req = self._wait(_Frame(deadline=deadline, avatar=avatar, params=params, packed=avatar.pack(params),
                                on_device=True))
        region = req.region
        assert region is not None
        if req.finished is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(req.finished)
            if req.fresh:
                region.rgb.record_stream(current)
                region.alpha.record_stream(current)
        return region

    # ------------------------------------------------------------------------------------- the thread
    def _run_batch(self, batch: list[_Frame]) -> None:
        groups: dict[Hashable, list[_Frame]] = {}
        for req in batch:
            groups.setdefault(req.avatar.batch_key, []).append(req)
        for reqs in groups.values():
            started = time.monotonic()
            try:
                if self.stream is None:
                    self._render_group(reqs)
                else:
                    self.stream.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(self.stream):
                        self._render_group(reqs)
                    finished = torch.cuda.Event()
                    finished.record(self.stream)
                    finished.synchronize()  # the cost estimate is the GPU's time, not the launch's
                    for r in reqs:
                        r.finished = finished
            except Exception as exc:  # each waiting session raises it on its own thread
                log.exception("a batch of %d FlashAvatar frames failed", len(reqs))
                for r in reqs:
                    r.error = exc
            self._record(reqs, started, len(reqs))
            for r in reqs:
                r.done.set()

    def _render_group(self, reqs: list[_Frame]) -> None:
        if len(reqs) < self.batched_from:
            pending: list[tuple[_Frame, PendingFrame]] = []
            for r in reqs:  # on CUDA each launches its frame graph; the host copies are waited for at the end
                if r.on_device:
                    r.region = r.avatar.region_alone(r.params)
                else:
                    pending.append((r, r.avatar.submit_alone(r.params)))
            for r, frame in pending:
                r.image = r.avatar.placed(frame.image(), r.params)
            return
        for start in range(0, len(reqs), PASS):
            self._render_pass(reqs[start:start + PASS])
        self.frames_batched += len(reqs)

    def _render_pass(self, reqs: Sequence[_Frame]) -> None:
        """Frames of avatars with one `batch_key`: one deformation pass, one rasterisation (gsplat)."""
        cuda = self.device.type == "cuda"
        packed = torch.cat([r.packed for r in reqs])
        views = torch.stack([r.avatar.base_camera.viewmat for r in reqs])
        with torch.no_grad():
            rgb, alpha = render_frames(reqs[0].avatar, packed, views)
            rgb8, alpha8 = _u8(rgb), _u8(alpha)
        host: tuple[torch.Tensor, torch.Tensor] | None = None
        if any(not r.on_device for r in reqs):
            host = (torch.empty(rgb8.shape, dtype=torch.uint8, pin_memory=cuda).copy_(rgb8, non_blocking=cuda),
                    torch.empty(alpha8.shape, dtype=torch.uint8, pin_memory=cuda).copy_(alpha8, non_blocking=cuda))
            if cuda:
                torch.cuda.current_stream(self.device).synchronize()
        for i, r in enumerate(reqs):
            a = r.avatar
            if r.on_device:
                r.region = DeviceRegion(rgb8[i], alpha8[i], a.origin, a.neck_pose(r.params))
                r.fresh = True
            else:
                assert host is not None
                image = RenderedImage(host[0][i].numpy(), host[1][i].numpy() if a.transparent else None)
                r.image = a.placed(image, r.params)
