"""Rotation conversions in NumPy between axis-angle, matrices, the 6D form FLAME-based avatars use, and
quaternions.

The 6D form is PyTorch3D's `matrix_to_rotation_6d`: the first two *rows* of the rotation matrix; quaternions
are stored (w, x, y, z). The API of the daemon speaks axis-angle (radians); models that want 6D convert at
their boundary with these functions. All functions take arrays with any leading batch shape. The torch twin
for device-side code is `rotations_torch`; the tests hold the two to the same results.
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


def quat_product(a: FloatArray, b: FloatArray) -> NDArray[np.float64]:
    """Hamilton product a ⊗ b of (..., 4) quaternions (broadcast against each other)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w1, v1 = a[..., :1], a[..., 1:]
    w2, v2 = b[..., :1], b[..., 1:]
    w = w1 * w2 - np.sum(v1 * v2, axis=-1, keepdims=True)
    v = w1 * v2 + w2 * v1 + np.cross(v1, v2)
    return np.concatenate([w, v], axis=-1)


def quat_left_matrix(a: FloatArray) -> NDArray[np.float64]:
    """The (4, 4) matrix L of one quaternion `a` with a ⊗ b = L @ b: turning many quaternions by the same
    rotation is then one matrix product, `quats @ L.T` (a fraction of `quat_product`'s cost on the host)."""
    w, x, y, z = np.asarray(a, dtype=np.float64).reshape(4)
    return np.array([[w, -x, -y, -z], [x, w, -z, y], [y, z, w, -x], [z, -y, x, w]])


def matrix_to_quat(mat: FloatArray) -> NDArray[np.float64]:
    """Shepperd's method, per element: (..., 3, 3) → (..., 4), robust for every angle (the sign of the
    quaternion follows the branch taken; q and -q are the same rotation)."""
    m = np.asarray(mat, dtype=np.float64)
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    q = np.zeros((len(m), 4))
    done = tr > 0
    w = np.sqrt(np.clip(1 + tr, 0, None)) / 2
    s = np.where(done, 4 * np.maximum(w, 1e-9), 1.0)
    q[done] = np.stack([w, (m[:, 2, 1] - m[:, 1, 2]) / s, (m[:, 0, 2] - m[:, 2, 0]) / s,
                        (m[:, 1, 0] - m[:, 0, 1]) / s], axis=1)[done]
    for i in range(3):  # else the largest diagonal entry (the first on ties) picks the axis
        j, k = (i + 1) % 3, (i + 2) % 3
        pick = ~done & (m[:, i, i] >= m[:, j, j]) & (m[:, i, i] >= m[:, k, k])
        r = np.sqrt(np.clip(1 + m[:, i, i] - m[:, j, j] - m[:, k, k], 1e-12, None))
        qq = np.zeros((len(m), 4))
        qq[:, 0] = (m[:, k, j] - m[:, j, k]) / (2 * r)
        qq[:, 1 + i] = r / 2
        qq[:, 1 + j] = (m[:, j, i] + m[:, i, j]) / (2 * r)
        qq[:, 1 + k] = (m[:, k, i] + m[:, i, k]) / (2 * r)
        q[pick] = qq[pick]
        done |= pick
    return q.reshape(*shape, 4)


def quat_to_axis_angle(q: FloatArray) -> NDArray[np.float64]:
    """(..., 4) quaternions (normalised here; zero or non-finite ones give no rotation) → (..., 3)."""
    q = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    ok = np.isfinite(norm) & (norm > 1e-9)
    q = np.where(ok, q / np.where(ok, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    q = np.where(q[..., :1] < 0, -q, q)  # the short way round
    w, v = q[..., :1], q[..., 1:]
    s = np.sqrt(np.clip(1.0 - w * w, 0.0, None))
    angle = 2.0 * np.arctan2(s, w)
    return np.where(s < 1e-9, 2.0 * v, v / np.where(s < 1e-9, 1.0, s) * angle)

