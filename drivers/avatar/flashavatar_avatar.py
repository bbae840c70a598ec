"""`FlashAvatarAvatar`: the `Avatar` driver for a trained FlashAvatar checkpoint and its FLAME files.

The whole path stays on the device: FaceParams → one packed host vector (pinned, one upload) → MLP + FLAME +
Gaussian parameters (replayed as a CUDA graph on GPUs, the fixed-size part) → splatting (gsplat on CUDA, the
CPU renderer otherwise) → uint8 on the device → one copy into pinned host memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.errors import UserError
from bridge.face_params import FaceParams
from bridge.interfaces import RenderedImage
from drivers.avatar.camera import default_camera, head_motion, load_tracker_frame, tracker_camera
from drivers.avatar.flashavatar import FlashAvatarModel, FlashFrame, quat_product
from drivers.avatar.gaussians import Camera, Gaussians, RasterSettings, SplatRenderer

log = logging.getLogger(__name__)

COND = 120
PACK = COND + 16  # condition + 4x4 head motion
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


def load_shape(path: Path | str) -> np.ndarray:
    """300 FLAME shape coefficients from .npy, .npz (key 'shape' or 'betas') or a tracker .frame."""
    p = Path(path)
    if p.suffix == ".frame":
        fr = load_tracker_frame(p)
        if fr.shape is None:
            raise AvatarSetupError(f"{p} has no flame.shape")
        return fr.shape
    try:
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


def _matrix_to_quat(r: torch.Tensor) -> torch.Tensor:
    """(3,3) rotation → (4,) quaternion (w, x, y, z), robust for every angle."""
    m = r.double()
    tr = float(m.trace())
    if tr > 0:
        s = (tr + 1.0) ** 0.5 * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(torch.argmax(torch.diagonal(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = float((1.0 + m[i, i] - m[j, j] - m[k, k]).clamp_min(1e-12) ** 0.5) * 2
        v = [0.0, 0.0, 0.0]
        v[i] = 0.25 * s
        v[j] = float(m[j, i] + m[i, j]) / s
        v[k] = float(m[k, i] + m[i, k]) / s
        q = [float(m[k, j] - m[j, k]) / s, *v]
    return torch.tensor([float(x) for x in q], dtype=torch.float32)


@dataclass
class StageTimes:
    """Milliseconds of the last frame per stage (CUDA events on GPU, wall clock on CPU)."""

    deform: float = 0.0
    raster: float = 0.0
    convert: float = 0.0


class FlashAvatarAvatar:
    """Renders FaceParams with a FlashAvatar checkpoint (see module docstring)."""

    name = "flashavatar"

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
        kind: str | None = None,
        mlp_precision: str = "auto",
        cuda_graph: bool = True,
        splat_renderer: SplatRenderer | None = None,
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
        self.transparent = bool(transparent)
        ckpt_p, flame_p = Path(checkpoint).expanduser(), Path(flame_model).expanduser()
        dirs = [flame_p.parent, flame_p.parent / "FLAME_masks", ckpt_p.parent, flame_p.parent / "blendshapes",
                Path.cwd() / "flame", Path.cwd() / "flame" / "FLAME_masks", Path.cwd() / "flame" / "blendshapes"]
        masks = _find(flame_masks, ("FLAME_masks.pkl",), dirs, "the FLAME masks file", "flame_masks")
        mesh = _find(flame_mesh, ("FlameMesh.obj",), dirs, "the UV template mesh", "flame_mesh")
        lids = (Path(eyelids_dir) if eyelids_dir is not None
                else _find(None, ("l_eyelid.npy",), dirs, "the eyelid blendshapes", "eyelids_dir").parent)
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
        self.model = FlashAvatarModel.from_files(ckpt_p, flame_p, masks, mesh, lids, shape_arr, device=device)
        dev = torch.device(device)
        self._dev = dev
        if frame is not None:
            self.base_camera = tracker_camera(frame, self.width, self.height, zoom, device=dev)
        else:
            pts = self.model.canonical.detach().cpu().numpy()
            lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
            self.base_camera = default_camera((lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2), self.width,
                                              self.height, zoom, device=dev)
        self.background = torch.tensor((0.0, 0.0, 0.0) if transparent else tuple(background), dtype=torch.float32,
                                       device=dev)
        self.settings = RasterSettings(eps2d=0.3)
        self.renderer = splat_renderer if splat_renderer is not None else self._select_renderer(renderer, device)
        self.times = StageTimes()
        self._joints = self.model.joints0.detach().cpu().numpy().astype(np.float64)
        self._cuda = dev.type == "cuda"
        self._host_in = torch.zeros(1, PACK, dtype=torch.float32, pin_memory=self._cuda)
        self._dev_in = torch.zeros(1, PACK, dtype=torch.float32, device=dev)
        self._uploaded = torch.cuda.Event() if self._cuda else None  # guards reuse of the pinned input buffer
        if self._cuda:
            self._choose_precision(mlp_precision)
        elif mlp_precision == "fp16":
            log.warning("fp16 MLP is only used on CUDA; running fp32 on the CPU")
        self._graph: Any = None
        self._static_out: tuple[torch.Tensor, ...] | None = None
        if self._cuda and cuda_graph:
            self._capture_graph()

    @classmethod
    def from_config(cls, config: Any) -> FlashAvatarAvatar:
        """Build from the daemon's `Config` (its video size and [avatar] section)."""
        a = config.avatar
        keys = ("checkpoint", "flame_model", "flame_masks", "flame_mesh", "eyelids_dir", "tracker_frame", "shape",
                "renderer", "device", "background", "transparent", "zoom")
        return cls(width=config.video.width, height=config.video.height, **{k: getattr(a, k) for k in keys})

    # -- setup ---------------------------------------------------------------------------------------------
    @staticmethod
    def _select_renderer(name: str, device: str) -> SplatRenderer:
        from drivers.avatar.renderers import select_renderer

        return select_renderer(name, device)

    def _choose_precision(self, precision: str) -> None:
        if precision == "fp32":
            return
        with torch.no_grad():
            gen = torch.Generator(device="cpu").manual_seed(0)
            cond = torch.cat([torch.zeros(1, COND), torch.randn(3, COND, generator=gen) * 0.5]).to(self._dev)
            cond[:, 100:106] = torch.tensor([1.0, 0, 0, 0, 1, 0], device=self._dev)
            cond[:, 106:118] = torch.tensor([1.0, 0, 0, 0, 1, 0] * 2, device=self._dev)
            ref = self.model.deform(cond)
            self.model.set_mlp_dtype(torch.float16)
            err = float((self.model.deform(cond) - ref).abs().max())
        if precision == "auto" and err > FP16_TOLERANCE:
            log.info("fp16 MLP differs by %.2g from fp32 on this avatar; keeping fp32", err)
            self.model.set_mlp_dtype(torch.float32)
        else:
            log.info("fp16 MLP (max deviation %.2g)", err)

    def _deform(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c = packed[:, :COND]
        frame = FlashFrame(c[:, :100], c[:, 100:106], c[:, 106:118], c[:, 118:120])
        means, quats, scales = self.model.gaussians_batch(frame)
        viewmat = self.base_camera.viewmat @ packed[0, COND:].reshape(4, 4)
        return means[0], quats[0], scales[0], viewmat

    def _capture_graph(self) -> None:
        try:
            self._host_in.copy_(self.pack(FaceParams.neutral()))
            self._dev_in.copy_(self._host_in)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):
                    self._deform(self._dev_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                self._static_out = self._deform(self._dev_in)
            self._graph = graph
        except RuntimeError as exc:  # capture is an optimisation: fall back to eager
            log.warning("CUDA graph capture failed (%s); running eagerly", exc)
            self._graph = None
            self._static_out = None

    # -- per frame -----------------------------------------------------------------------------------------
    def pack(self, params: FaceParams) -> torch.Tensor:
        """FaceParams → (1, 136) float32 host tensor: expr, jaw6, eyes12, eyelids, head motion (4x4)."""
        six = params.to_6d()
        motion = self._motion(params)
        vec = np.concatenate([params.expression, six["jaw"], six["eyes"], params.eyelids,
                              motion.reshape(-1).astype(np.float32)]).astype(np.float32)
        return torch.from_numpy(vec)[None]

    def _motion(self, params: FaceParams) -> np.ndarray:
        return head_motion(params.head, params.neck, params.translation, self._joints)

    def gaussians(self, params: FaceParams) -> tuple[Gaussians, Camera]:
        """Posed Gaussians and the camera for one frame (device tensors)."""
        packed = self.pack(params)
        if self._uploaded is not None:
            self._uploaded.synchronize()  # the previous upload has left the pinned buffer
        self._host_in.copy_(packed)
        self._dev_in.copy_(self._host_in, non_blocking=self._cuda)
        if self._uploaded is not None:
            self._uploaded.record()
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

    def set_view(self, viewmat: np.ndarray | torch.Tensor) -> None:
        """Replace the base world→camera matrix (e.g. per-frame tracker cameras) in place, so a captured CUDA
        graph keeps reading it."""
        v = torch.as_tensor(np.asarray(viewmat, np.float32) if isinstance(viewmat, np.ndarray) else viewmat)
        self.base_camera.viewmat.copy_(v.to(self.base_camera.viewmat.dtype).reshape(4, 4))

    def world_gaussians(self, params: FaceParams, apply_head_motion: bool = True) -> Gaussians:
        """Gaussians of a frame in FLAME's frame, optionally moved rigidly by the frame's head motion (means and
        orientations; view-dependent SH colour stays in the head's frame). A standalone copy on the CPU."""
        frame = self.model.frame_from_arrays(params.expression, params.to_6d()["jaw"], params.to_6d()["eyes"],
                                             params.eyelids)
        with torch.no_grad():
            means, quats, scales = (x[0].float().cpu() for x in self.model.gaussians_batch(frame))
        if apply_head_motion:
            m = torch.as_tensor(self._motion(params), dtype=torch.float32)
            means = means @ m[:3, :3].T + m[:3, 3]
            quats = torch.nn.functional.normalize(quat_product(_matrix_to_quat(m[:3, :3]).expand_as(quats), quats),
                                                  dim=-1)
        mdl = self.model
        return Gaussians(means, quats, scales, mdl.opacities.cpu(), mdl.sh.cpu(), mdl.sh_degree)

    def render(self, params: FaceParams) -> RenderedImage:
        g, cam = self.gaussians(params)
        with torch.no_grad():
            rgb, alpha = self.renderer.render(g, cam, self.background, self.settings)
            rgb8 = (rgb.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
            a8 = (alpha.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8) if self.transparent else None
        return RenderedImage(self._to_host(rgb8), None if a8 is None else self._to_host(a8))

    def _to_host(self, t: torch.Tensor) -> np.ndarray:
        if not self._cuda:
            return t.contiguous().numpy()
        # A fresh pinned block from torch's caching host allocator: the returned array owns it, so a frame
        # held by a slow sink is never overwritten by a later one.
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return host.numpy()

    def close(self) -> None:
        self._graph = None
        self._static_out = None

    def info(self) -> dict[str, Any]:
        m = self.model
        return {"gaussians": m.ckpt.num_gaussians, "sh_degree": m.sh_degree, "device": self.device,
                "renderer": getattr(self.renderer, "name", "?"), "mlp_dtype": str(m.mlp_dtype),
                "cuda_graph": self._graph is not None, "width": self.width, "height": self.height}
