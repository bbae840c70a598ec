"""Rotation conversions in torch, batched and device-resident (they run inside CUDA graphs).

The same conventions as `bridge.core.rotations` (NumPy): axis-angle in radians, PyTorch3D's 6D form (the first
two *rows* of the matrix), quaternions stored (w, x, y, z). Every function takes any leading batch shape
unless it says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """PyTorch3D's convention: Gram-Schmidt on the two 3-vectors, which become the matrix *rows*."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = F.normalize(b2, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(mat: torch.Tensor) -> torch.Tensor:
    return mat[..., :2, :].reshape(*mat.shape[:-2], 6)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, smooth through zero (first-order terms dominate for tiny angles)."""
    theta = torch.linalg.vector_norm(aa, dim=-1, keepdim=True)
    small = theta < 1e-8
    safe = torch.where(small, torch.ones_like(theta), theta)
    axis = aa / safe
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(*aa.shape[:-1], 3, 3)
    s = torch.sin(theta)[..., None]
    c = (1.0 - torch.cos(theta))[..., None]
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    rot = eye + s * k + c * (k @ k)
    ax, ay, az = aa.unbind(-1)
    skew = torch.stack((zero, -az, ay, az, zero, -ax, -ay, ax, zero), dim=-1).reshape(k.shape)
    return torch.where(small[..., None], eye + skew, rot)


def quat_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a ⊗ b of (..., 4) quaternions stored (w, x, y, z)."""
    w1, v1 = a[..., :1], a[..., 1:]
    w2, v2 = b[..., :1], b[..., 1:]
    w = w1 * w2 - (v1 * v2).sum(-1, keepdim=True)
    v = w1 * v2 + w2 * v1 + torch.cross(v1, v2, dim=-1)
    return torch.cat([w, v], dim=-1)


def quat_to_matrix(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N,3,3) from quaternions (N,4) as (w,x,y,z), normalised here."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)


def matrix_to_quat(r: torch.Tensor) -> torch.Tensor:
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
