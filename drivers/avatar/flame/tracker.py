"""metrical-tracker `.frame` files: the tracked camera, FLAME shape and expression of one video frame.

A `.frame` is a `torch.save`d dict of NumPy arrays, read weights-only with NumPy arrays allowed
(`drivers.safe_load`). Camera conventions are upstream's (see the spec): OpenCV world→camera, principal point
at (W/2, H/2), near plane 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.core.errors import UserError
from drivers.avatar.splat.cameras import FAR, NEAR
from drivers.avatar.splat.gaussians import Camera
from drivers.safe_load import NUMPY_ARRAYS, RefusedContent, SafeLoadError, load_torch


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


def load_tracker_file(path: Path | str) -> dict[str, Any]:
    """A metrical-tracker checkpoint (torch.save'd dict of NumPy arrays), loaded without arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise TrackerFrameError(f"tracker frame {path} does not exist; point tracker_frame at a metrical-tracker "
                                "checkpoint/NNNNN.frame")
    try:
        data = load_torch(path, allow=NUMPY_ARRAYS)
    except RefusedContent as exc:
        raise TrackerFrameError(f"refusing to load {path}: it contains objects other than arrays ({exc.reason})") from None
    except SafeLoadError as exc:
        raise TrackerFrameError(f"{path} is damaged, truncated or not a tracker checkpoint ({exc.reason[:200]}); "
                                "copy it again from the tracker's output folder") from None
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
