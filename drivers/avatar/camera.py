"""Cameras for FlashAvatar: from metrical-tracker `.frame` files, or a default live framing.

FlashAvatar keeps FLAME's global rotation, neck and translation at identity and carries head motion in the
camera. So a head or neck rotation coming from a face driver or a control is applied here, by moving the
camera with the inverse rigid motion: the image is the one FLAME's global (root-joint) and neck rotation would
give if the whole head turned rigidly, including view-dependent colour.

Conventions are upstream's (see the spec): OpenCV world→camera, principal point at (W/2, H/2), near plane 0.2.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.errors import UserError
from drivers.avatar.flame import axis_angle_to_matrix
from drivers.avatar.gaussians import Camera

NEAR = 0.2  # FlashAvatar's rasteriser culls Gaussians closer than 0.2 in view space
FAR = 1e10
GREEN = (0.0, 1.0, 0.0)  # upstream's training/eval background


class TrackerFrameError(UserError, ValueError):
    """A tracker `.frame` file is missing, unsafe or lacks what FlashAvatar needs."""


@dataclass
class TrackerFrame:
    R: np.ndarray  # (3,3) OpenCV world→camera rotation
    t: np.ndarray  # (3,)
    K: np.ndarray  # (3,3)
    height: int
    width: int
    shape: np.ndarray | None  # (300,)
    expr: np.ndarray | None  # (100,)
    jaw6: np.ndarray | None
    eyes12: np.ndarray | None
    eyelids: np.ndarray | None


def _numpy_safe_globals() -> list[Any]:
    """What torch's weights-only unpickler must additionally accept to rebuild plain NumPy arrays."""
    allowed: list[Any] = [np.ndarray, np.dtype]
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        allowed += [mod._reconstruct, mod.scalar]
        break
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for attr in dir(dtypes):
            cls = getattr(dtypes, attr)
            if isinstance(cls, type) and attr.endswith("DType") and attr not in ("ObjectDType", "VoidDType"):
                allowed.append(cls)
    return allowed


def load_tracker_file(path: Path | str) -> dict[str, Any]:
    """A metrical-tracker checkpoint (torch.save'd dict of NumPy arrays), loaded without arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise TrackerFrameError(f"tracker frame {path} does not exist; point tracker_frame at a metrical-tracker "
                                "checkpoint/NNNNN.frame")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        from drivers.avatar.flashavatar import unpickling_reason

        first = unpickling_reason(exc)
        raise TrackerFrameError(f"refusing to load {path}: it contains objects other than arrays ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise TrackerFrameError(f"{path} is truncated or not a tracker checkpoint ({type(exc).__name__}: "
                                f"{str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise TrackerFrameError(f"{path} holds a {type(data).__name__}, not a metrical-tracker frame dict")
    return data


def _arr(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def parse_tracker_frame(data: dict[str, Any], source: str = "tracker frame") -> TrackerFrame:
    cv = data.get("opencv")
    if not isinstance(cv, dict) or not all(k in cv for k in ("R", "t", "K")):
        raise TrackerFrameError(f"{source} has no 'opencv' camera (R, t, K); is it a metrical-tracker .frame?")
    R = _arr(cv["R"]).reshape(-1, 3, 3)[0]
    t = _arr(cv["t"]).reshape(-1, 3)[0]
    K = _arr(cv["K"]).reshape(-1, 3, 3)[0]
    size = data.get("img_size")
    if size is None:
        h = w = round(float(2 * K[1, 2])) or 512
    else:
        hw = _arr(size).reshape(-1)
        h, w = int(hw[0]), int(hw[1]) if hw.size > 1 else int(hw[0])
    raw = data.get("flame")
    flame: dict[str, Any] = raw if isinstance(raw, dict) else {}

    def get(key: str, n: int) -> np.ndarray | None:
        if key not in flame:
            return None
        v = _arr(flame[key]).reshape(-1)
        if v.size != n:
            raise TrackerFrameError(f"{source}: flame.{key} has {v.size} values, expected {n}")
        return v.astype(np.float32)

    return TrackerFrame(R=R, t=t, K=K, height=h, width=w, shape=get("shape", 300), expr=get("exp", 100),
                        jaw6=get("jaw", 6), eyes12=get("eyes", 12), eyelids=get("eyelids", 2))


def load_tracker_frame(path: Path | str) -> TrackerFrame:
    return parse_tracker_frame(load_tracker_file(path), str(path))


def tracker_camera(frame: TrackerFrame, width: int | None = None, height: int | None = None, zoom: float = 1.0,
                   device: torch.device | str = "cpu") -> Camera:
    """Upstream's camera for a tracked frame, rescaled to width x height (focal scaled by the shorter side)."""
    w = width or frame.width
    h = height or frame.height
    scale = min(w, h) / float(min(frame.width, frame.height)) * zoom
    view = np.eye(4)
    view[:3, :3] = frame.R
    view[:3, 3] = frame.t
    K = np.array([[frame.K[0, 0] * scale, 0, w / 2.0], [0, frame.K[1, 1] * scale, h / 2.0], [0, 0, 1]])
    return Camera(torch.tensor(view, dtype=torch.float32, device=device),
                  torch.tensor(K, dtype=torch.float32, device=device), w, h, NEAR, FAR)


def default_camera(center: np.ndarray, radius: float, width: int, height: int, zoom: float = 1.0,
                   distance: float = 1.0, device: torch.device | str = "cpu") -> Camera:
    """Frontal view of FLAME's face (+z) with the head's bounding sphere filling ~85 % of the shorter side."""
    c = np.asarray(center, dtype=np.float64).reshape(3)
    cam_pos = c + np.array([0.0, 0.0, distance])
    R = np.diag([1.0, -1.0, -1.0])  # world y up → image y down, camera looks along -z of the world
    view = np.eye(4)
    view[:3, :3] = R
    view[:3, 3] = -R @ cam_pos
    f = zoom * 0.85 * 0.5 * min(width, height) * distance / max(radius, 1e-6)
    K = np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]])
    return Camera(torch.tensor(view, dtype=torch.float32, device=device),
                  torch.tensor(K, dtype=torch.float32, device=device), width, height, NEAR, FAR)


def head_motion_batch(head_rot: torch.Tensor, neck_rot: torch.Tensor, translation: torch.Tensor,
                      joints: torch.Tensor) -> torch.Tensor:
    """4x4 rigid motions: neck rotation about joint 1, then FLAME's global rotation about the root joint 0, then
    translation. For the root this is exactly what FLAME's LBS does (every vertex follows the root); the neck
    is applied rigidly to the whole head (FLAME blends it into the neck base; FlashAvatar never bends it).

    Rotation matrices (B,3,3) and translations (B,3) → (B,4,4) in their dtype, on their device, with no host
    round trip (it runs inside the avatar's CUDA graphs)."""
    j0, j1 = joints[0].to(head_rot), joints[1].to(head_rot)
    rot = head_rot @ neck_rot
    shift = (j0 - head_rot @ j0) + (head_rot @ (j1 - neck_rot @ j1)[..., None])[..., 0] + translation
    top = torch.cat([rot, shift[..., None]], dim=-1)
    b = top.shape[0]
    bottom = torch.cat([top.new_zeros(b, 1, 3), top.new_ones(b, 1, 1)], dim=-1)  # made on the device: capturable
    return torch.cat([top, bottom], dim=-2)


def head_motion(head_aa: np.ndarray, neck_aa: np.ndarray, translation: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """`head_motion_batch` for one frame of axis-angle poses, in float64 NumPy (the CPU-side callers)."""
    rots = axis_angle_to_matrix(torch.as_tensor(np.stack([head_aa, neck_aa]), dtype=torch.float64).reshape(2, 3))
    move = torch.as_tensor(np.asarray(translation, np.float64).reshape(1, 3))
    return head_motion_batch(rots[:1], rots[1:], move, torch.as_tensor(np.asarray(joints, np.float64)))[0].numpy()


def moved_camera(base: Camera, motion: torch.Tensor) -> Camera:
    """The camera that sees the unmoved avatar as `base` sees the avatar moved by `motion` (4x4)."""
    return Camera(base.viewmat @ motion.to(base.viewmat), base.K, base.width, base.height, base.near, base.far)
