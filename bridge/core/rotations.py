"""Rotation conversions between axis-angle, matrices and the 6D form FLAME-based avatars use.

The 6D form is PyTorch3D's `matrix_to_rotation_6d`: the first two *rows* of the rotation matrix. The API of
the daemon speaks axis-angle (radians); models that want 6D convert at their boundary with these functions.
All functions take arrays with any leading batch shape.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]


def axis_angle_to_matrix(aa: FloatArray) -> NDArray[np.float64]:
    """Rodrigues' formula; `aa` (..., 3) → (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    small = theta < 1e-8
    axis = aa / np.where(small, 1.0, theta)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    t = theta[..., None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    rot = eye + np.sin(t) * k + (1.0 - np.cos(t)) * (k @ k)
    # First-order expansion for tiny angles keeps the map smooth through zero.
    skew = np.stack(
        [zero, -aa[..., 2], aa[..., 1], aa[..., 2], zero, -aa[..., 0], -aa[..., 1], aa[..., 0], zero], axis=-1
    ).reshape(k.shape)
    return np.asarray(np.where(small[..., None], eye + skew, rot), dtype=np.float64)


def matrix_to_axis_angle(mat: FloatArray) -> NDArray[np.float64]:
    """Inverse of `axis_angle_to_matrix`, stable near 0 and pi; (..., 3, 3) → (..., 3)."""
    mat = np.asarray(mat, dtype=np.float64)
    cos = np.clip((np.trace(mat, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    vee = np.stack(
        [mat[..., 2, 1] - mat[..., 1, 2], mat[..., 0, 2] - mat[..., 2, 0], mat[..., 1, 0] - mat[..., 0, 1]], axis=-1
    )
    sin = np.sin(theta)
    general = vee * (theta / np.where(np.abs(sin) < 1e-8, 1.0, 2.0 * sin))[..., None]
    small = (theta < 1e-6)[..., None]
    result = np.where(small, vee / 2.0, general)
    # Near pi the antisymmetric part vanishes: take the axis from the symmetric part instead.
    near_pi = (np.pi - theta) < 1e-4
    if np.any(near_pi):
        sym = (mat + np.eye(3)) / 2.0
        diag = np.clip(np.diagonal(sym, axis1=-2, axis2=-1), 0.0, None)
        axis = np.sqrt(diag)
        col = np.argmax(diag, axis=-1)
        ref = np.take_along_axis(sym, col[..., None, None].repeat(3, axis=-1), axis=-2)[..., 0, :]
        axis = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
        result = np.where(near_pi[..., None], axis * theta[..., None], result)
    return result


def matrix_to_rotation_6d(mat: FloatArray) -> NDArray[np.float64]:
    """First two rows of the matrix, flattened: (..., 3, 3) → (..., 6)."""
    rows = np.asarray(mat, dtype=np.float64)
    return rows[..., :2, :].reshape(*rows.shape[:-2], 6)


def rotation_6d_to_matrix(d6: FloatArray) -> NDArray[np.float64]:
    """Gram-Schmidt on the two rows; the third row is their cross product: (..., 6) → (..., 3, 3)."""
    d6 = np.asarray(d6, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


def axis_angle_to_rotation_6d(aa: FloatArray) -> NDArray[np.float64]:
    return matrix_to_rotation_6d(axis_angle_to_matrix(aa))


def rotation_6d_to_axis_angle(d6: FloatArray) -> NDArray[np.float64]:
    return matrix_to_axis_angle(rotation_6d_to_matrix(d6))
