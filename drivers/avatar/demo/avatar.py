"""The embedded demo avatar: a procedural 3D-Gaussian head made in code (no downloads), driven by FaceParams.

What moves it (`presets/arkit_demo.toml` maps ARKit blendshapes onto these):

=================  =======================  ===============================================================
FaceParams field   range                    effect
=================  =======================  ===============================================================
jaw[0]             0 … ~0.35 rad            opens the mouth (lower face about the jaw hinge); jaw[1] shifts
                                            it sideways
eyelids[i]         -0.25 … 1                0 open, 1 closed (blink), negative opens wide; i = 0 left, 1 right
eyes (2,3)         axis-angle, ~±0.4 rad    gaze: x = pitch (>0 looks down), y = yaw (>0 towards the head's
                                            left); iris and pupil rotate about each eye's centre
head, neck         axis-angle               rigid head rotation (about the top / base of the neck)
translation        metres                   moves the head
expression[0]      smile, -1 … 1            mouth corners up and out, cheeks up (negative: corners down)
expression[1]      brow_raise, 0 … 1        brows and forehead up
expression[2]      frown, 0 … 1             brows down and together
expression[3]      pucker, 0 … 1            lips narrow and push forward
expression[4]      wide, 0 … 1              lips spread and flatten
=================  =======================  ===============================================================

The head has about 27k Gaussians (skin with baked key-light shading, a hair cap, brows, lips, teeth, tongue
and a dark mouth interior, eyeballs with irises and pupils, sliding upper lids, ears, neck). The geometry is
built once per process and shared by every instance.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from bridge.core.config import Config
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import NeckPose, RenderedImage
from bridge.core.models import ModelCache
from drivers.avatar.demo.head import NECK_BOTTOM, HeadModel, build_head
from drivers.avatar.demo.rig import HeadRig
from drivers.avatar.scene.framing import HeadFraming
from drivers.avatar.splat.cameras import default_camera
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings, SplatRenderer
from drivers.avatar.splat.images import to_uint8
from drivers.avatar.splat.select import resolve_device, select_renderer

DEMO_EXPRESSION_CHANNELS: dict[str, int] = {"smile": 0, "brow_raise": 1, "frown": 2, "pucker": 3, "wide": 4}
HEAD_CENTER = (0.0, -0.012, 0.0)
HEAD_RADIUS = 0.128
CAMERA_DISTANCE = 0.9
NECK_BASE = np.array([0.0, NECK_BOTTOM, -0.012])  # where the neck meets the body (the torso's collar): still
CULL_COSINE = -0.15  # keep surface Gaussians whose normal is at most ~99° away from the view direction


@functools.lru_cache(maxsize=1)
def demo_head() -> HeadModel:
    """The canonical head, generated once per process (about a second)."""
    return build_head()


class DemoAvatar:
    """Implements `Avatar` for the procedural head; renders with gsplat on CUDA or the CPU renderer."""

    name = "demo"
    expression_channels = DEMO_EXPRESSION_CHANNELS

    def __init__(
        self,
        width: int = 256,
        height: int = 256,
        renderer: str = "auto",
        device: str = "auto",
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        transparent: bool = False,
        zoom: float = 1.0,
        cull_backfaces: bool = True,
        splat_renderer: SplatRenderer | None = None,
        framing: HeadFraming | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.width, self.height = int(width), int(height)
        self.transparent = bool(transparent) or framing is not None  # a framed head is composited by its alpha
        self.cull_backfaces = cull_backfaces
        self.model = demo_head()
        self.rig = HeadRig(self.model, DEMO_EXPRESSION_CHANNELS)
        self._dev = torch.device(self.device)
        self.camera: Camera = default_camera(np.array(HEAD_CENTER), HEAD_RADIUS, self.width, self.height, zoom,
                                             distance=CAMERA_DISTANCE, device=self._dev)
        self.origin = (0, 0)
        self.neck: NeckPose | None = None
        if framing is not None:
            self._frame(framing)
        view = self.camera.viewmat.detach().cpu().double().numpy()
        self._cam_pos = (-view[:3, :3].T @ view[:3, 3]).astype(np.float32)
        self.background = torch.tensor((0.0, 0.0, 0.0) if self.transparent else tuple(background), dtype=torch.float32,
                                       device=self._dev)
        self.settings = RasterSettings()
        self.renderer = splat_renderer if splat_renderer is not None else select_renderer(renderer, self.device)
        m = self.model
        self._scales = torch.from_numpy(m.scales).to(self._dev)
        self._opac = torch.from_numpy(m.opacities).to(self._dev)
        self._colors = torch.from_numpy(m.colors).to(self._dev)
        self._never_cull = ~m.cull

    def _frame(self, framing: HeadFraming) -> None:
        """Render only the head's region of the frame, through intrinsics that place it as `framing` says; the
        neck's base stays with the body (the rig keeps it still), so its place in the frame is fixed."""
        view = self.camera.viewmat.detach().cpu().double().numpy()
        centre = view[:3, :3] @ np.array(HEAD_CENTER) + view[:3, 3]
        placed = framing.camera(centre, HEAD_RADIUS)
        roi = placed.roi
        self.camera = Camera(self.camera.viewmat, torch.tensor(placed.roi_K, dtype=torch.float32, device=self._dev),
                             roi.width, roi.height, self.camera.near, self.camera.far)
        self.width, self.height = roi.width, roi.height
        self.origin = (roi.x0, roi.y0)
        base = view[:3, :3] @ NECK_BASE + view[:3, 3]
        x, y = placed.project(base)
        self.neck = NeckPose(float(x), float(y), 0.0, float(placed.K[1, 1] / base[2]))

    @classmethod
    def from_config(cls, config: Config, *, models: ModelCache | None = None,
                    framing: HeadFraming | None = None) -> DemoAvatar:
        """The video size and the [avatar] section's renderer, device, background and zoom; with `framing`, the
        head alone (with alpha) in its region of the frame, for a scene to composite. The demo head is made in
        code, so there is nothing to take from `models`."""
        a = config.avatar
        background = a.background if isinstance(a.background, tuple) else (0.0, 0.0, 0.0)
        return cls(width=config.video.width, height=config.video.height, renderer=a.renderer, device=a.device,
                   background=background, transparent=a.transparent, zoom=a.zoom, framing=framing)

    @property
    def num_gaussians(self) -> int:
        return len(self.model)

    def gaussians(self, params: FaceParams) -> Gaussians:
        """The posed head (all Gaussians, or only those facing the camera when culling) on the device."""
        means, quats, normals = self.rig.pose(params)
        idx: np.ndarray | None = None
        if self.cull_backfaces:
            view = self._cam_pos[None] - means
            distance = np.sqrt(np.einsum("ij,ij->i", view, view))  # np.linalg.norm's values, in a third of its time
            facing = np.einsum("ij,ij->i", view, normals) > CULL_COSINE * distance
            idx = np.flatnonzero(facing | self._never_cull)
        if self._dev.type == "cpu":
            # NumPy gathers, no torch op: torch's gathers wake its intra-op thread pool, whose spinning threads
            # took ten times the gathers' own CPU time per frame on two busy cores. np.take, not a[idx]: the same
            # rows in a quarter of the time.
            m = self.model
            mt, qt, st, ot, ct = (torch.from_numpy(a if idx is None else np.take(a, idx, axis=0))
                                  for a in (means, quats, m.scales, m.opacities, m.colors))
            return Gaussians(mt, qt, st, ot, ct)
        mt, qt = torch.from_numpy(means), torch.from_numpy(quats)
        if idx is None:
            return Gaussians(mt.to(self._dev), qt.to(self._dev), self._scales, self._opac, self._colors)
        host_idx = torch.from_numpy(idx)
        dev_idx = host_idx.to(self._dev)
        return Gaussians(mt[host_idx].to(self._dev), qt[host_idx].to(self._dev), self._scales[dev_idx],
                         self._opac[dev_idx], self._colors[dev_idx])

    def render(self, params: FaceParams) -> RenderedImage:
        g = self.gaussians(params)
        with torch.no_grad():
            rgb, alpha = self.renderer.render(g, self.camera, self.background, self.settings)
        return RenderedImage(to_uint8(rgb), to_uint8(alpha) if self.transparent else None, self.origin, self.neck)

    def close(self) -> None:
        """Nothing to release: the geometry is shared and tensors are freed with the object."""

    def info(self) -> dict[str, Any]:
        return {"gaussians": len(self.model), "device": self.device, "renderer": self.renderer.name,
                "width": self.width, "height": self.height, "cull_backfaces": self.cull_backfaces}
