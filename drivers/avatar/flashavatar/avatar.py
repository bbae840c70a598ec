"""`FlashAvatarAvatar`: the live `Avatar` driver for a trained FlashAvatar checkpoint and its FLAME files.

The whole path stays on the device: FaceParams → one packed host vector of raw values (pinned, one upload) →
rotations, head motion, FLAME, MLP and Gaussian parameters → splatting (gsplat on CUDA, the CPU renderer
otherwise) → uint8 on the device → one copy into pinned host memory. On CUDA with gsplat all of it after the
upload is one CUDA graph replay (`splat.frame_graph.GsplatFrameGraph`); otherwise the deformation is a graph
and the splatting runs per frame.

`render(params)` is the `Avatar` protocol: this frame's image, waiting for the device. Many frames at once
(offline rendering, multi-view) and posed Gaussians for export are in `offline`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Hashable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import NeckPose, RenderedImage
from bridge.core.models import ModelCache, process_models
from bridge.core.rotations_torch import axis_angle_to_matrix, matrix_to_rotation_6d
from drivers.avatar.flame.model import head_motion, head_motion_batch
from drivers.avatar.flame.tracker import load_tracker_frame, tracker_camera
from drivers.avatar.flashavatar.frame_batcher import DEFAULT_BATCHED_FROM, FrameBatcher
from drivers.avatar.flashavatar.model import FlashAvatarModel, FlashFrame, SubjectFiles
from drivers.avatar.flashavatar.pending import PendingFrame
from drivers.avatar.scene.framing import HeadFraming, RoiCamera
from drivers.avatar.scene.layers import DeviceRegion
from drivers.avatar.splat.cameras import default_camera
from drivers.avatar.splat.frame_graph import GsplatFrameGraph
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings, SplatRenderer
from drivers.cuda_graphs import capturing
from drivers.cuda_streams import realtime_stream
from drivers.safe_load import check_numpy_file

log = logging.getLogger(__name__)

COND = 120
PACK = 120  # expression 100, axis-angle jaw 3, eyes 6, head 3, neck 3, then eyelids 2, translation 3
FP16_TOLERANCE = 5e-4  # max |tanh output| difference fp16 vs fp32 accepted for the fast MLP


class AvatarSetupError(UserError, ValueError):
    """The FlashAvatar configuration cannot be used; the message says which file or value and what to do."""


def _find(explicit: Path | str | None, names: tuple[str, ...], dirs: list[Path], what: str, key: str) -> Path:
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise AvatarSetupError(f"{what} {p} does not exist; fix avatar.{key}")
        return p
    for d in dirs:
        for n in names:
            if (d / n).exists():
                return d / n
    raise AvatarSetupError(f"cannot find {what} ({' or '.join(names)}) next to the checkpoint or FLAME file; "
                           f"set avatar.{key}")


def find_flame_files(flame_model: Path, flame_masks: Path | str | None, flame_mesh: Path | str | None,
                     eyelids_dir: Path | str | None, near: Sequence[Path] = (), cli: bool = False
                     ) -> tuple[Path, Path, Path]:
    """FLAME's masks file, UV template mesh and eyelid folder: as given, else found beside the FLAME model (and
    its FLAME_masks/ and blendshapes/ folders), in the `near` folders (the checkpoint's) or in ./flame. Errors
    name the avatar.* setting, and with `cli` the command's option too."""
    def key(name: str) -> str:
        return f"{name} (--{name.replace('_', '-')})" if cli else name

    cwd = Path.cwd()
    dirs = [flame_model.parent, flame_model.parent / "FLAME_masks", *near, flame_model.parent / "blendshapes",
            cwd / "flame", cwd / "flame" / "FLAME_masks", cwd / "flame" / "blendshapes"]
    masks = _find(flame_masks, ("FLAME_masks.pkl",), dirs, "the FLAME masks file", key("flame_masks"))
    mesh = _find(flame_mesh, ("FlameMesh.obj",), dirs, "the UV template mesh", key("flame_mesh"))
    lids = (Path(eyelids_dir).expanduser() if eyelids_dir is not None
            else _find(None, ("l_eyelid.npy",), dirs, "the eyelid blendshapes", key("eyelids_dir")).parent)
    return masks, mesh, lids


def load_shape(path: Path | str) -> np.ndarray:
    """300 FLAME shape coefficients from .npy, .npz (key 'shape' or 'betas') or a tracker .frame."""
    p = Path(path)
    if p.suffix == ".frame":
        fr = load_tracker_frame(p)
        if fr.shape is None:
            raise AvatarSetupError(f"{p} has no flame.shape")
        return fr.shape
    try:
        check_numpy_file(p)
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise AvatarSetupError(f"shape file {p} is not a readable .npy/.npz ({exc})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        key = next((k for k in ("shape", "betas", "shape_params") if k in data.files), None)
        if key is None:
            raise AvatarSetupError(f"{p} has no 'shape' array (keys: {data.files})")
        data = data[key]
    arr = np.asarray(data, np.float32).reshape(-1)
    if arr.size < 300:
        arr = np.concatenate([arr, np.zeros(300 - arr.size, np.float32)])
    return arr[:300]


def choose_mlp_precision(model: FlashAvatarModel, precision: str) -> None:
    """fp16 for the MLP's hidden layers when asked, or with "auto" when it stays within FP16_TOLERANCE of fp32
    on this avatar (CUDA only); the choice is the model's, so every avatar sharing it gets the same one."""
    if precision == "fp32" or model.device.type != "cuda":
        if precision == "fp16":
            log.warning("fp16 MLP is only used on CUDA; running fp32 on the CPU")
        return
    dev = model.device
    with torch.no_grad():
        gen = torch.Generator(device="cpu").manual_seed(0)
        cond = torch.cat([torch.zeros(1, COND), torch.randn(3, COND, generator=gen) * 0.5]).to(dev)
        cond[:, 100:106] = torch.tensor([1.0, 0, 0, 0, 1, 0], device=dev)
        cond[:, 106:118] = torch.tensor([1.0, 0, 0, 0, 1, 0] * 2, device=dev)
        ref = model.deform(cond)
        model.set_mlp_dtype(torch.float16)
        err = float((model.deform(cond) - ref).abs().max())
    if precision == "auto" and err > FP16_TOLERANCE:
        log.info("fp16 MLP differs by %.2g from fp32 on this avatar; keeping fp32", err)
        model.set_mlp_dtype(torch.float32)
    else:
        log.info("fp16 MLP (max deviation %.2g)", err)


def load_model(checkpoint: Path, flame_model: Path, masks: Path, mesh: Path, eyelids: Path,
               shape: np.ndarray | None, device: str, precision: str, models: ModelCache | None
               ) -> FlashAvatarModel:
    """The avatar's model with its MLP precision chosen; with `models`, the FLAME files and the model are the
    ones already loaded in this process for the same files, shape, device and precision (a shared model is
    only read by the avatars using it)."""
    def build(files: SubjectFiles) -> FlashAvatarModel:
        model = FlashAvatarModel.from_subject(checkpoint, files, shape, device=device)
        choose_mlp_precision(model, precision)
        return model

    def subject() -> SubjectFiles:
        return SubjectFiles.load(flame_model, masks, mesh, eyelids, device)

    if models is None:
        return build(subject())
    flame_files = [flame_model, masks, mesh, eyelids / "l_eyelid.npy", eyelids / "r_eyelid.npy"]
    files = models.get(models.key("flame", flame_files, device), subject)
    shape_id = None if shape is None else hashlib.sha256(np.ascontiguousarray(shape, np.float32).tobytes()).hexdigest()
    key = models.key("flashavatar", [checkpoint, *flame_files], device, (shape_id, precision))
    return models.get(key, lambda: build(files))


def warm_up_poses() -> list[FaceParams]:
    """Poses at the edges of what speech and head motion produce (mouth open, head turned and tilted, a strong
    expression), ending on neutral."""
    strong = np.zeros(100, np.float32)
    strong[:10] = 1.5
    return [FaceParams(jaw=np.array([0.35, 0, 0], np.float32)),
            *(FaceParams(head=np.array(head, np.float32), jaw=np.array([0.2, 0, 0], np.float32))
              for head in ((0, 0.4, 0), (0, -0.4, 0), (0.25, 0, 0), (-0.25, 0, 0), (0, 0, 0.2), (0, 0, -0.2))),
            FaceParams(expression=strong, jaw=np.array([0.25, 0, 0], np.float32)),
            FaceParams.neutral()]


class FlashAvatarAvatar:
    """Renders FaceParams with a FlashAvatar checkpoint (see module docstring)."""

    name = "flashavatar"
    expression_channels: dict[str, int] = {}  # noqa: RUF012 - FLAME expressions have no named channels

    def __init__(
        self,
        checkpoint: Path | str | None = None,
        flame_model: Path | str | None = None,
        flame_masks: Path | str | None = None,
        flame_mesh: Path | str | None = None,
        eyelids_dir: Path | str | None = None,
        tracker_frame: Path | str | None = None,
        shape: Path | str | np.ndarray | None = None,
        width: int = 512,
        height: int = 512,
        renderer: str = "auto",
        device: str = "auto",
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        transparent: bool = False,
        zoom: float = 1.0,
        mlp_precision: str = "auto",
        cuda_graph: bool = True,
        frame_graph: bool = True,
        splat_renderer: SplatRenderer | None = None,
        models: ModelCache | None = None,
        gpu_priority: bool = True,
        framing: HeadFraming | None = None,
        frame_batching: int = DEFAULT_BATCHED_FROM,
    ) -> None:
        if checkpoint is None or flame_model is None:
            raise AvatarSetupError("FlashAvatar needs avatar.checkpoint (chkpnt*.pth) and avatar.flame_model "
                                   "(FLAME 2020 generic_model.pkl)")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise AvatarSetupError("avatar.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        self.device = device
        self.width, self.height = int(width), int(height)
        self.transparent = bool(transparent) or framing is not None  # a framed head is composited by its alpha
        ckpt_p, flame_p = Path(checkpoint).expanduser(), Path(flame_model).expanduser()
        for path, key, what in ((ckpt_p, "checkpoint", "checkpoint"), (flame_p, "flame_model", "FLAME model")):
            if not path.is_file():  # before the files looked for beside them
                raise AvatarSetupError(f"{what} {path} does not exist; fix avatar.{key}")
        masks, mesh, lids = find_flame_files(flame_p, flame_masks, flame_mesh, eyelids_dir, near=(ckpt_p.parent,))
        frame = load_tracker_frame(tracker_frame) if tracker_frame is not None else None
        if isinstance(shape, np.ndarray):
            shape_arr: np.ndarray | None = shape.astype(np.float32).reshape(-1)
        elif shape is not None:
            shape_arr = load_shape(shape)
        elif frame is not None and frame.shape is not None:
            shape_arr = frame.shape
        else:
            log.warning("no avatar.shape or avatar.tracker_frame given: using the mean FLAME shape, which only "
                        "matches avatars trained on it")
            shape_arr = None
        self.model = load_model(ckpt_p, flame_p, masks, mesh, lids, shape_arr, device, mlp_precision, models)
        dev = torch.device(device)
        self._dev = dev
        if frame is not None:
            self.base_camera = tracker_camera(frame, self.width, self.height, zoom, device=dev)
        else:
            pts = self.model.canonical.detach().cpu().numpy()
            lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
            self.base_camera = default_camera((lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2), self.width,
                                              self.height, zoom, device=dev)
        self.origin = (0, 0)
        self._placed: RoiCamera | None = None
        if framing is not None:
            self._frame(framing)
        self.background = torch.tensor((0.0, 0.0, 0.0) if self.transparent else tuple(background), dtype=torch.float32,
                                       device=dev)
        self.settings = RasterSettings(eps2d=0.3)
        self.renderer = splat_renderer if splat_renderer is not None else self._select_renderer(renderer, device)
        self._joints_dev = self.model.joints0.detach().to(dev, torch.float32)
        self._cuda = dev.type == "cuda"
        # Two pinned input slots, each guarded by the event of its last upload, so packing frame N never waits
        # for frame N-1's work (one frame in flight).
        self._host_in = [torch.zeros(1, PACK, dtype=torch.float32, pin_memory=self._cuda) for _ in range(2)]
        self._uploaded: list[Any] = [torch.cuda.Event() if self._cuda else None for _ in range(2)]
        self._slot = 0
        self._dev_in = torch.zeros(1, PACK, dtype=torch.float32, device=dev)
        hw = (self.height, self.width)
        self._f32 = torch.empty(*hw, 3, dtype=torch.float32, device=dev)  # reused conversion buffers
        self._u8 = torch.empty(*hw, 3, dtype=torch.uint8, device=dev)
        self._a32 = torch.empty(*hw, dtype=torch.float32, device=dev)
        self._a8 = torch.empty(*hw, dtype=torch.uint8, device=dev)
        self._graph: Any = None
        self._static_out: tuple[torch.Tensor, ...] | None = None
        if self._cuda and cuda_graph:
            self._capture_graph()
        self._frame_graph: GsplatFrameGraph | None = None
        if self._graph is not None and frame_graph and self.renderer.name == "gsplat":
            self._capture_frame_graph()
        # Frames render on a stream of their own, of the highest priority unless turned off (a shared GPU).
        self._stream: Any = realtime_stream(dev, gpu_priority) if self._cuda else None
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream(dev))  # after the captures' warm-up work
        if self._cuda:
            self._warm_up()
        # Avatars of one model that render their frames together once `frame_batching` of them (0: never) share
        # it: its frame batcher comes from `models`, like the model.
        self.batch_key: Hashable = (id(self.model), self.width, self.height, tuple(self.base_camera.K.flatten().tolist()),
                                    tuple(self.background.tolist()), self.transparent, self.base_camera.near,
                                    self.base_camera.far, self.renderer.name, repr(self.settings))
        self._batcher: FrameBatcher | None = None
        if models is not None and frame_batching > 0:
            model = self.model
            self._batcher = models.get(models.key("flashavatar-frames", [], device, (id(model), frame_batching)),
                                       lambda: FrameBatcher(model, batched_from=frame_batching, priority=gpu_priority))
            self._batcher.join()

    @classmethod
    def from_config(cls, config: Config, *, models: ModelCache | None = None,
                    framing: HeadFraming | None = None) -> FlashAvatarAvatar:
        """The video size and the [avatar] section: the checkpoint, its FLAME files, renderer and zoom. The model
        comes from `models` (default: the process's cache), so avatars of one checkpoint share it. With
        `framing`, the head alone (with alpha) in its region of the frame, for a scene to composite."""
        a = config.avatar
        background = a.background if isinstance(a.background, tuple) else (0.0, 0.0, 0.0)
        return cls(checkpoint=a.checkpoint, flame_model=a.flame_model, flame_masks=a.flame_masks,
                   flame_mesh=a.flame_mesh, eyelids_dir=a.eyelids_dir, tracker_frame=a.tracker_frame, shape=a.shape,
                   width=config.video.width, height=config.video.height, renderer=a.renderer, device=a.device,
                   background=background, transparent=a.transparent, zoom=a.zoom,
                   models=models or process_models(), gpu_priority=config.pipeline.gpu_priority, framing=framing,
                   frame_batching=config.sessions.batch_frames_from)

    # -- setup ---------------------------------------------------------------------------------------------
    def _frame(self, framing: HeadFraming) -> None:
        """Render only the head's region of the frame, through intrinsics that place the head (the bounding
        sphere of its canonical Gaussians, seen by the tracked camera) as `framing` says."""
        pts = self.model.canonical.detach().cpu().double().numpy()
        lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
        view = self.base_camera.viewmat.detach().cpu().double().numpy()
        centre = view[:3, :3] @ ((lo + hi) / 2) + view[:3, 3]
        K = self.base_camera.K.detach().cpu().double().numpy()
        placed = framing.camera(centre, float(np.linalg.norm(hi - lo) / 2), aspect=float(K[1, 1] / K[0, 0]))
        roi = placed.roi
        self.base_camera = Camera(self.base_camera.viewmat, torch.tensor(placed.roi_K, dtype=torch.float32,
                                                                          device=self._dev),
                                  roi.width, roi.height, self.base_camera.near, self.base_camera.far)
        self.width, self.height = roi.width, roi.height
        self.origin = (roi.x0, roi.y0)
        self._placed = placed
        self._joints_host = self.model.joints0.detach().cpu().double().numpy()
        self._view_host = view

    @property
    def frame_batcher(self) -> FrameBatcher | None:
        """The batcher this avatar's frames render in once enough sessions share its model, if any."""
        return self._batcher

    @property
    def placement(self) -> RoiCamera | None:
        """The framing's intrinsics for the whole frame and the region this head renders (None unless framed)."""
        return self._placed

    def neck_pose(self, params: FaceParams) -> NeckPose | None:
        """Where FLAME's root joint (the neck's base) is in the frame after this frame's head motion, and the
        on-screen turn of the neck there (None unless framed)."""
        if self._placed is None:
            return None
        joints = self._joints_host
        motion = head_motion(np.asarray(params.head), np.asarray(params.neck), np.asarray(params.translation),
                             joints)
        view = self._view_host @ motion
        base = view[:3, :3] @ joints[0] + view[:3, 3]
        below = view[:3, :3] @ (joints[0] - np.array([0.0, 0.05, 0.0])) + view[:3, 3]
        (x, y), (bx, by) = self._placed.project(base), self._placed.project(below)
        roll = float(np.arctan2(-(bx - x), by - y))
        return NeckPose(float(x), float(y), roll, float(self._placed.K[1, 1] / base[2]))

    @staticmethod
    def _select_renderer(name: str, device: str) -> SplatRenderer:
        from drivers.avatar.splat.select import select_renderer

        return select_renderer(name, device)

    def _deform(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        means, quats, scales, viewmats = self.deform_batch(packed, self.base_camera.viewmat)
        return means[0], quats[0], scales[0], viewmats[0]

    def deform_batch(self, packed: torch.Tensor, views: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,120) packed frames → means/quats/scales (B,N,·) and world→camera (B,4,4) = view @ head motion;
        `views` is the base view (4,4) or one per frame (B,4,4)."""
        b = packed.shape[0]
        rots = axis_angle_to_matrix(packed[:, 100:115].reshape(b, 5, 3))  # jaw, eyes, head, neck: one pass
        six = matrix_to_rotation_6d(rots[:, :3])
        frame = FlashFrame(packed[:, :100], six[:, 0], six[:, 1:].reshape(b, 12), packed[:, 115:117])
        means, quats, scales = self.model.gaussians_batch(frame)
        motion = head_motion_batch(rots[:, 3], rots[:, 4], packed[:, 117:120], self._joints_dev)
        return means, quats, scales, views @ motion

    def _capture_graph(self) -> None:
        try:
            self._dev_in.copy_(self.pack(FaceParams.neutral()))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):
                    self._deform(self._dev_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with capturing(graph):
                self._static_out = self._deform(self._dev_in)
            self._graph = graph
        except RuntimeError as exc:  # capture is an optimisation: fall back to eager
            log.warning("CUDA graph capture failed (%s); running eagerly", exc)
            self._graph = None
            self._static_out = None

    def _capture_frame_graph(self) -> None:
        m, cam = self.model, self.base_camera
        try:
            self._frame_graph = GsplatFrameGraph(
                lambda: self._deform(self._dev_in), m.opacities, m.sh, m.sh_degree, cam.K, self.width, self.height,
                cam.near, cam.far, self.background, self.settings, with_alpha=self.transparent,
            )
        except (RuntimeError, ImportError, AttributeError) as exc:  # an optimisation: the graph of the deformation
            log.warning("whole-frame CUDA graph not available (%s); rasterising per frame", exc)  # still runs
            self._frame_graph = None

    def _warm_up(self) -> None:
        """Render the far ends of ordinary motion once before the stream: the frame graph's intersection list
        grows to hold them (a capture of tens of milliseconds that would otherwise fall on the first frame that
        opens the mouth or turns the head), and the first replay, host copies and pinned blocks are paid here."""
        t0 = time.perf_counter()
        for params in warm_up_poses():
            self.render(params)
        fg = self._frame_graph
        log.info("avatar warmed up in %.0f ms%s", (time.perf_counter() - t0) * 1000,
                 "" if fg is None else f" (room for {fg.capacity} tile intersections)")

    # -- per frame -----------------------------------------------------------------------------------------
    def pack(self, params: FaceParams) -> torch.Tensor:
        """FaceParams → (1, 120) float32 host tensor of the raw values; rotations are converted on the device,
        so the host's share of a frame is a copy."""
        vec = np.concatenate([params.expression, params.jaw, params.eyes.reshape(6), params.head, params.neck,
                              params.eyelids, params.translation]).astype(np.float32, copy=False)
        if vec.size != PACK:
            raise ValueError(f"face parameters pack to {vec.size} values, not {PACK}: a field has the wrong length")
        return torch.from_numpy(vec)[None]

    def gaussians(self, params: FaceParams) -> tuple[Gaussians, Camera]:
        """Posed Gaussians and the camera for one frame (device tensors, overwritten by the next frame)."""
        self._upload(params)
        with torch.no_grad():
            if self._graph is not None and self._static_out is not None:
                self._graph.replay()
                means, quats, scales, viewmat = self._static_out
            else:
                means, quats, scales, viewmat = self._deform(self._dev_in)
        m = self.model
        cam = Camera(viewmat, self.base_camera.K, self.width, self.height, self.base_camera.near,
                     self.base_camera.far)
        return Gaussians(means, quats, scales, m.opacities, m.sh, m.sh_degree), cam

    def _upload(self, params: FaceParams) -> None:
        """Pack a frame into a pinned slot and copy it into the static device input the graphs read."""
        packed = self.pack(params)
        slot = self._slot = self._slot ^ 1
        host, uploaded = self._host_in[slot], self._uploaded[slot]
        if uploaded is not None:
            uploaded.synchronize()  # this slot's previous upload (two frames ago) has left the pinned buffer
        host.copy_(packed)
        self._dev_in.copy_(host, non_blocking=self._cuda)
        if uploaded is not None:
            uploaded.record()

    def set_view(self, viewmat: np.ndarray | torch.Tensor) -> None:
        """Replace the base world→camera matrix (e.g. per-frame tracker cameras) in place, so a captured CUDA
        graph keeps reading it."""
        v = torch.as_tensor(np.asarray(viewmat, np.float32) if isinstance(viewmat, np.ndarray) else viewmat)
        self.base_camera.viewmat.copy_(v.to(self.base_camera.viewmat.dtype).reshape(4, 4))

    # -- rendering -----------------------------------------------------------------------
    def render(self, params: FaceParams) -> RenderedImage:
        """This frame's image (waits for the device): the `Avatar` protocol's per-frame-latency path; with enough
        sessions sharing the model, rendered together with theirs (`frame_batcher`)."""
        if self._batcher is not None and self._batcher.batching:
            return self._batcher.render(self, params)
        return self.placed(self.submit_alone(params).image(), params)

    def placed(self, image: RenderedImage, params: FaceParams) -> RenderedImage:
        """`image` with where this (framed) head's region sits in the frame and its neck pose for `params`."""
        if self._placed is not None:
            image.origin, image.neck = self.origin, self.neck_pose(params)
        return image

    def render_on_device(self, params: FaceParams) -> DeviceRegion:
        """This frame's region as uint8 tensors left on the device (valid until the next render), for a scene
        that composites there: nothing crosses to the host but the frame graph's intersection count. Waits for
        the device; the caller's stream is ordered after the work. With enough sessions sharing the model,
        rendered together with theirs."""
        if self._batcher is not None and self._batcher.batching:
            return self._batcher.render_on_device(self, params)
        return self.region_alone(params)

    def region_alone(self, params: FaceParams) -> DeviceRegion:
        """`render_on_device` for this frame alone."""
        if self._stream is None:
            return self._region_here(params)
        self._stream.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(self._stream):
            region = self._region_here(params)
        torch.cuda.current_stream(self._dev).wait_stream(self._stream)
        return region

    def _region_here(self, params: FaceParams) -> DeviceRegion:
        fg = self._frame_graph
        neck = self.neck_pose(params)
        if fg is not None:
            capacity = fg.capacity
            self._upload(params)
            fg.replay()
            count = torch.empty(1, dtype=torch.int64, pin_memory=True).copy_(fg.count, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            done.synchronize()
            if int(count) > capacity:  # the list was too short for this frame: grow it and render again
                if not fg.fits(int(count)):
                    try:
                        fg.grow(int(count))
                    except RuntimeError as exc:
                        log.warning("capturing the grown frame graph failed (%s); rasterising per frame from now "
                                    "on", exc)
                        self._frame_graph = None
                return self._region_here(params)
            alpha = fg.alpha_u8 if fg.alpha_u8 is not None else torch.full_like(fg.rgb_u8[..., 0], 255)
            return DeviceRegion(fg.rgb_u8, alpha, self.origin, neck)
        g, cam = self.gaussians(params)
        with torch.no_grad():
            rgb, alpha = self.renderer.render(g, cam, self.background, self.settings)
            for x, f32, u8 in ((rgb, self._f32, self._u8), (alpha, self._a32, self._a8)):
                torch.clamp(x, 0.0, 1.0, out=f32)
                f32.mul_(255.0).add_(0.5)
                u8.copy_(f32)  # float → uint8 truncates: round half up, as the host path
        return DeviceRegion(self._u8, self._a8, self.origin, neck)

    def submit_alone(self, params: FaceParams) -> PendingFrame:
        """Queue this frame's work alone (on the avatar's stream) without waiting for it."""
        return self._submit(params)

    def _submit(self, params: FaceParams) -> PendingFrame:
        if self._stream is None:
            return self._submit_here(params)
        # After what the caller queued on its stream (a `gaussians` call, which fills the same inputs).
        self._stream.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(self._stream):
            return self._submit_here(params)

    def _submit_here(self, params: FaceParams) -> PendingFrame:
        """Queue the frame's work on the current stream."""
        if self._frame_graph is not None:
            return self._submit_graphed(self._frame_graph, params)
        g, cam = self.gaussians(params)
        with torch.no_grad():
            rgb, alpha = self.renderer.render(g, cam, self.background, self.settings)
            return self._finish(rgb, alpha if self.transparent else None, self._f32, self._u8, self._a32,
                                self._a8)

    def _submit_graphed(self, fg: GsplatFrameGraph, params: FaceParams) -> PendingFrame:
        """Upload, one graph replay, and the copies of the image and the intersection count into fresh pinned
        blocks (in stream order, before the next replay overwrites the graph's outputs)."""
        self._upload(params)
        fg.replay()
        rgb = torch.empty(fg.rgb_u8.shape, dtype=torch.uint8, pin_memory=True).copy_(fg.rgb_u8, non_blocking=True)
        alpha = None
        if fg.alpha_u8 is not None:
            alpha = torch.empty(fg.alpha_u8.shape, dtype=torch.uint8, pin_memory=True).copy_(fg.alpha_u8,
                                                                                            non_blocking=True)
        count = torch.empty(1, dtype=torch.int64, pin_memory=True).copy_(fg.count, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return PendingFrame(rgb, alpha, done, count, partial(self._redo, fg, fg.capacity, params))

    def _redo(self, fg: GsplatFrameGraph, capacity: int, params: FaceParams, count: int) -> PendingFrame | None:
        """None when the frame fit the list it was rendered with; else render it again, growing the list first
        unless a later frame has grown it enough already."""
        if count <= capacity:
            return None
        if not fg.fits(count):
            try:
                fg.grow(count)
            except RuntimeError as exc:
                log.warning("capturing the grown frame graph failed (%s); rasterising per frame from now on", exc)
                self._frame_graph = None
                return self._submit(params)
        return self._submit_graphed(fg, params)

    def _finish(self, rgb: torch.Tensor, alpha: torch.Tensor | None, f32: torch.Tensor, u8: torch.Tensor,
                a32: torch.Tensor, a8: torch.Tensor) -> PendingFrame:
        """float [0,1] → uint8 (round half up) on the device into reused buffers, then one copy into a fresh
        pinned host block from torch's caching host allocator: the returned array owns its block, so a frame
        held by a slow sink is never overwritten by a later one, and freed blocks are reused without a new
        pinning."""
        host_rgb = self._convert(rgb, f32, u8)
        host_a = None if alpha is None else self._convert(alpha, a32, a8)
        done = None
        if self._cuda:
            done = torch.cuda.Event()
            done.record()
        return PendingFrame(host_rgb, host_a, done)

    def _convert(self, x: torch.Tensor, f32: torch.Tensor, u8: torch.Tensor) -> torch.Tensor:
        torch.clamp(x, 0.0, 1.0, out=f32)
        f32.mul_(255.0).add_(0.5)
        host = torch.empty(f32.shape, dtype=torch.uint8, pin_memory=self._cuda)
        if not self._cuda:
            return host.copy_(f32)  # float → uint8 truncates, like .to(torch.uint8)
        u8.copy_(f32)
        return host.copy_(u8, non_blocking=True)

    def close(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.leave()
        self._graph = None
        self._static_out = None
        self._frame_graph = None

    def info(self) -> dict[str, Any]:
        m = self.model
        return {"gaussians": m.ckpt.num_gaussians, "sh_degree": m.sh_degree, "device": self.device,
                "renderer": self.renderer.name, "mlp_dtype": str(m.mlp_dtype),
                "cuda_graph": self._graph is not None, "width": self.width, "height": self.height,
                "frame_graph": None if self._frame_graph is None else {"capacity": self._frame_graph.capacity,
                                                                       "regrown": self._frame_graph.regrown}}
