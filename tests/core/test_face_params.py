from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bridge.core.face_params import FaceParams
from bridge.core.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_rotation_6d,
    matrix_to_axis_angle,
    rotation_6d_to_axis_angle,
    rotation_6d_to_matrix,
)


def test_axis_angle_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(64, 3)) * rng.uniform(0, 3.0, size=(64, 1))
    aa = np.concatenate([aa, np.zeros((1, 3)), [[1e-10, 0, 0]], [[np.pi - 1e-6, 0, 0]]])
    ours = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(ours, Rotation.from_rotvec(aa).as_matrix(), atol=1e-9)
    back = axis_angle_to_matrix(matrix_to_axis_angle(ours))
    np.testing.assert_allclose(back, ours, atol=1e-6)


def test_6d_is_first_two_rows_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    aa = rng.normal(size=(32, 3))
    mats = Rotation.from_rotvec(aa).as_matrix()
    d6 = axis_angle_to_rotation_6d(aa)
    np.testing.assert_allclose(d6, mats[:, :2, :].reshape(32, 6), atol=1e-9)
    np.testing.assert_allclose(rotation_6d_to_matrix(d6), mats, atol=1e-9)
    np.testing.assert_allclose(axis_angle_to_matrix(rotation_6d_to_axis_angle(d6)), mats, atol=1e-6)
    # Identity 6D is (1,0,0, 0,1,0); un-normalised input is orthonormalised.
    np.testing.assert_allclose(rotation_6d_to_matrix(np.array([2.0, 0, 0, 0.5, 3.0, 0])), np.eye(3), atol=1e-12)


def test_face_params_vector_layout_and_validation() -> None:
    p = FaceParams(expression=np.arange(50, dtype=np.float32), pts=1.5)
    assert p.expression.shape == (100,) and p.expression[49] == 49 and p.expression[50] == 0
    p.jaw[0] = 0.2
    p.eyes[1, 1] = -0.1
    vec = p.to_vector()
    assert vec.shape == (120,) and vec[100] == pytest.approx(0.2) and vec[103 + 4] == pytest.approx(-0.1)
    q = FaceParams.from_vector(vec, pts=2.0)
    np.testing.assert_array_equal(q.to_vector(), vec)
    with pytest.raises(ValueError, match="jaw must have shape"):
        FaceParams(jaw=np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        FaceParams(eyelids=np.array([np.nan, 0], np.float32))


def test_6d_conversions_of_face_params() -> None:
    p = FaceParams()
    p.jaw[:] = (0.3, 0.0, 0.0)
    six = p.to_6d()
    assert six["eyes"].shape == (12,) and six["jaw"].shape == (6,)
    np.testing.assert_allclose(six["eyes"], [1, 0, 0, 0, 1, 0] * 2, atol=1e-7)
    back = FaceParams.from_6d(p.expression, six["jaw"], six["eyes"], [0.5, 0.1])
    np.testing.assert_allclose(back.jaw, p.jaw, atol=1e-6)
    np.testing.assert_allclose(back.eyelids, [0.5, 0.1])
    assert p.copy(pts=3.0).pts == 3.0 and p.copy().jaw is not p.jaw
