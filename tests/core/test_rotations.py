"""One set of rotation conventions in two array libraries: the NumPy functions (host-side callers) give the
torch ones' results (device-side code, CUDA graphs) on random and edge-case rotations."""

from __future__ import annotations

import numpy as np
import torch

from bridge.core import rotations as rn
from bridge.core import rotations_torch as rt


def _axis_angles() -> np.ndarray:
    rng = np.random.default_rng(3)
    aa = rng.normal(size=(400, 3)) * 1.2
    edges = [[0, 0, 0], [1e-10, 0, 0], [np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi], [3.14, 0.05, 0],
             [0, -np.pi / 2, 0], [2.0, 2.0, 2.0]]
    return np.concatenate([np.array(edges, np.float64), aa])


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def test_matrices_from_axis_angle_and_6d_agree() -> None:
    aa = _axis_angles()
    mats = rn.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(mats, rt.axis_angle_to_matrix(_t(aa)).numpy(), atol=1e-12)
    six = rn.matrix_to_rotation_6d(mats)
    np.testing.assert_allclose(six, rt.matrix_to_rotation_6d(_t(mats)).numpy(), atol=0)
    noisy = six + np.random.default_rng(4).normal(scale=0.05, size=six.shape)  # not orthonormal: Gram-Schmidt
    np.testing.assert_allclose(rn.rotation_6d_to_matrix(noisy), rt.rotation_6d_to_matrix(_t(noisy)).numpy(),
                               atol=1e-12)


def test_quaternions_agree_and_round_trip() -> None:
    mats = rn.axis_angle_to_matrix(_axis_angles())
    q_np = rn.matrix_to_quat(mats)
    q_t = rt.matrix_to_quat(_t(mats)).numpy()
    np.testing.assert_allclose(q_np, q_t, atol=1e-12)  # same branches, same signs
    np.testing.assert_allclose(rt.quat_to_matrix(_t(q_np)).numpy(), mats, atol=1e-9)
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    np.testing.assert_allclose(rn.quat_product(a, b), rt.quat_product(_t(a), _t(b)).numpy(), atol=1e-12)
    np.testing.assert_allclose(b @ rn.quat_left_matrix(a[0]).T, rn.quat_product(a[:1], b), atol=1e-12)
    # The product of quaternions is the product of their rotations.
    qa, qb = q_np[:50], q_np[50:100]
    np.testing.assert_allclose(rt.quat_to_matrix(_t(rn.quat_product(qa, qb))).numpy(), mats[:50] @ mats[50:100],
                               atol=1e-9)


def test_quaternion_to_axis_angle_inverts_the_matrix_path() -> None:
    aa = _axis_angles()
    back = rn.quat_to_axis_angle(rn.matrix_to_quat(rn.axis_angle_to_matrix(aa)))
    np.testing.assert_allclose(rn.axis_angle_to_matrix(back), rn.axis_angle_to_matrix(aa), atol=1e-9)
    assert np.all(np.linalg.norm(back, axis=-1) <= np.pi + 1e-9)  # the short way round
    np.testing.assert_array_equal(rn.quat_to_axis_angle(np.array([[0.0, 0, 0, 0], [np.nan, 0, 0, 0]])), 0.0)
