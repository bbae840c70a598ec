"""Camera constructors for splatting: a frontal framing of a head, a look-at view, a pinhole matrix.

Conventions are OpenCV's (world→camera view matrices, x right, y down, z forward) with the principal point
at the image centre, as gsplat and FlashAvatar use them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from drivers.avatar.splat.gaussians import Camera

NEAR = 0.2  # FlashAvatar's rasteriser culls Gaussians closer than 0.2 in view space
FAR = 1e10


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


def look_at(
    eye: tuple[float, float, float],
    target: tuple[float, float, float],
    up: tuple[float, float, float] = (0.0, 1.0, 0.0),
) -> torch.Tensor:
    """World→camera viewmat (4,4) in OpenCV axes (x right, y down, z forward) looking from `eye` at `target`.

    `up` is the world direction that should appear at the top of the image, i.e. camera -y.
    """
    e = torch.tensor(eye, dtype=torch.float32)
    fwd = torch.tensor(target, dtype=torch.float32) - e
    fwd = fwd / fwd.norm()
    down = -torch.tensor(up, dtype=torch.float32)
    right = torch.linalg.cross(down, fwd)
    if float(right.norm()) < 1e-6:
        raise ValueError("look_at: the up direction is parallel to the viewing direction")
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    R = torch.stack([right, down, fwd])
    view = torch.eye(4)
    view[:3, :3] = R
    view[:3, 3] = -R @ e
    return view


def intrinsics(width: int, height: int, fov_y_deg: float) -> torch.Tensor:
    """Pinhole K with square pixels and the principal point at the image centre."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
