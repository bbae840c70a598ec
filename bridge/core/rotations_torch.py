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
    """Rotation matrices (N,3,3) from quaternions (N,4), normalised here."""
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


def matrix_to_quat(mat: torch.Tensor) -> torch.Tensor:
    """Shepperd's method, per element without host branches: (..., 3, 3) → (..., 4), robust for every angle;
    the same branches (and so the same signs) as `rotations.matrix_to_quat`."""
    m = mat.reshape(-1, 3, 3)
    d = torch.diagonal(m, dim1=-2, dim2=-1)
    tr = d.sum(-1)
    w = torch.sqrt(torch.clamp(1 + tr, min=0)) / 2
    s = 4 * torch.clamp(w, min=1e-9)
    out = torch.stack([w, (m[:, 2, 1] - m[:, 1, 2]) / s, (m[:, 0, 2] - m[:, 2, 0]) / s,
                       (m[:, 1, 0] - m[:, 0, 1]) / s], dim=-1)
    done = tr > 0
    for i in range(3):  # else the largest diagonal entry (the first on ties) picks the axis
        j, k = (i + 1) % 3, (i + 2) % 3
        pick = ~done & (d[:, i] >= d[:, j]) & (d[:, i] >= d[:, k])
        r = torch.sqrt(torch.clamp(1 + d[:, i] - d[:, j] - d[:, k], min=1e-12))
        parts = [torch.zeros_like(r)] * 4
        parts[0] = (m[:, k, j] - m[:, j, k]) / (2 * r)
        parts[1 + i] = r / 2
        parts[1 + j] = (m[:, j, i] + m[:, i, j]) / (2 * r)
        parts[1 + k] = (m[:, k, i] + m[:, i, k]) / (2 * r)
        out = torch.where(pick[:, None], torch.stack(parts, dim=-1), out)
        done = done | pick
    return out.reshape(*mat.shape[:-2], 4)
