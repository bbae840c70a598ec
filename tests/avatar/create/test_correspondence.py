"""The project's landmark↔FLAME table: well formed, anatomically placed, and right where the landmark model
actually puts its points on a rendered face; a user's embedding file round-trips and a bad one is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.avatar.flame.obj import load_obj
from drivers.avatar.flashavatar.create import correspondence as cm
from drivers.avatar.flashavatar.create.synthetic_flame import LEFT_EYEBALL, RIGHT_EYEBALL
from tests.golden_files import require


def _mesh() -> tuple[np.ndarray, np.ndarray]:
    (path,) = require("flashavatar", "FlameMesh.obj")
    mesh = load_obj(path)
    return mesh.vertices.astype(np.float64), mesh.faces


def test_shipped_table_is_well_formed_and_anatomical() -> None:
    v, faces = _mesh()
    corr = cm.shipped_correspondence()
    corr.check_faces(len(faces))
    assert len(corr.landmark_indices) >= 120
    assert (corr.bary >= -1e-6).all()
    for group in (cm.IRIS_CENTRES, cm.LIPS_OUTER, cm.LIPS_INNER, cm.EYE_A, cm.EYE_B, cm.NOSE):
        assert np.isin(group, corr.landmark_indices).mean() > 0.9
    # The iris centres lie on the eyeballs (mediapipe's 468 is the subject's right eye, FLAME's -x side).
    on = {int(i): set(faces[f].tolist()) for i, f in zip(corr.landmark_indices, corr.face_idx)}
    assert on[468] <= set(range(RIGHT_EYEBALL.start, RIGHT_EYEBALL.stop))
    assert on[473] <= set(range(LEFT_EYEBALL.start, LEFT_EYEBALL.stop))
    pts = dict(zip(corr.landmark_indices.tolist(), corr.surface_points(v, faces)))
    assert pts[1][2] > pts[13][2] and pts[1][1] > pts[13][1] > pts[152][1]  # nose tip ahead of lips over chin
    assert pts[33][0] < 0 < pts[263][0]  # outer eye corners on their sides


def test_table_matches_the_landmark_model_on_a_rendered_face() -> None:
    from bridge.core.rotations import axis_angle_to_matrix
    from drivers.avatar.flashavatar.create.landmarks import FaceMesher
    from drivers.avatar.flashavatar.create.synthetic_video import astronaut_texture, render
    from drivers.avatar.flashavatar.create.tracking import FLIP

    v, faces = _mesh()
    corr = cm.shipped_correspondence()
    size = 512
    K = np.array([[1.8 * size, 0, size / 2], [0, 1.8 * size, size / 2], [0, 0, 1]])
    # A view between the ones the table was made from.
    cam = (v - v[:3931].mean(0)) @ (FLIP @ axis_angle_to_matrix(np.radians([5.0, -12.0, 3.0]))).T + [0, 0, 0.62]
    found = FaceMesher(still=True).points(render(cam, faces, K, size, astronaut_texture(v, faces)))
    assert found is not None
    table = corr.surface_points(cam, faces)
    projected = table[:, :2] / table[:, 2:3] * K[0, 0] + size / 2
    err = np.linalg.norm(projected - found[corr.landmark_indices], axis=1)
    inner = ~np.isin(corr.landmark_indices, cm.FACE_OVAL)
    assert np.median(err[inner]) < 2.5  # pixels, the face ~300 px wide
    assert np.median(err) < 4.0


def test_closest_surface_points_recovers_points_on_the_surface() -> None:
    v, faces = _mesh()
    rng = np.random.default_rng(0)
    fid = rng.integers(0, len(faces), 20)
    bary = rng.dirichlet(np.ones(3), 20)
    points = np.einsum("lk,lkc->lc", bary, v[faces[fid]])
    got_f, got_b = cm.closest_surface_points(points, v, faces)
    back = np.einsum("lk,lkc->lc", got_b, v[faces[got_f]])
    np.testing.assert_allclose(back, points, atol=1e-7)


def test_user_embedding_round_trips_and_bad_ones_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    corr = cm.Correspondence(np.arange(100, 105), rng.integers(0, 9000, 5),
                             rng.dirichlet(np.ones(3), 5).astype(np.float32), np.arange(5, dtype=np.float32),
                             rng.normal(scale=0.01, size=(5, 4, 3)).astype(np.float32))
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    corr.save(path)
    back = cm.load_embedding(path)
    np.testing.assert_array_equal(back.landmark_indices, corr.landmark_indices)
    np.testing.assert_array_equal(back.face_idx, corr.face_idx)
    np.testing.assert_allclose(back.bary, corr.bary)
    assert back.spread_mm is not None and back.view_offsets is not None
    np.testing.assert_allclose(back.view_offsets, corr.view_offsets)
    np.testing.assert_allclose(back.weights(), 1 / (1 + (np.arange(5) / 2.0) ** 2))
    with pytest.raises(cm.CorrespondenceError, match="triangles"):
        back.check_faces(1000)
    np.savez(tmp_path / "partial.npz", lmk_face_idx=corr.face_idx)
    with pytest.raises(cm.CorrespondenceError, match="lacks"):
        cm.load_embedding(tmp_path / "partial.npz")
    np.savez(tmp_path / "floats.npz", lmk_face_idx=corr.face_idx * 1.0, lmk_b_coords=corr.bary,
             landmark_indices=corr.landmark_indices)
    with pytest.raises(cm.CorrespondenceError, match="integers"):
        cm.load_embedding(tmp_path / "floats.npz")
    np.savez(tmp_path / "range.npz", lmk_face_idx=corr.face_idx, lmk_b_coords=corr.bary,
             landmark_indices=corr.landmark_indices + 400)
    with pytest.raises(cm.CorrespondenceError, match="0..477"):
        cm.load_embedding(tmp_path / "range.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(cm.CorrespondenceError, match="not a readable"):
        cm.load_embedding(tmp_path / "junk.npz")
    with pytest.raises(cm.CorrespondenceError, match="does not exist"):
        cm.load_embedding(tmp_path / "missing.npz")


def test_view_features_tell_where_the_camera_is() -> None:
    from bridge.core.rotations import axis_angle_to_matrix
    from drivers.avatar.flashavatar.create.tracking import FLIP

    centre = np.array([0.0, 1.5, 0.0])
    feats = []
    for yaw in (0.0, 20.0, -20.0, 60.0):
        rot = FLIP @ axis_angle_to_matrix(np.radians([10.0, yaw, 0.0]))
        feats.append(cm.view_features(rot[None], (np.array([0, 0, 0.6]) - rot @ centre)[None], centre)[0])
    f = np.degrees(np.array(feats)[:, :2])
    assert abs(f[0, 0]) < 1e-6 and f[0, 1] == pytest.approx(10.0, abs=0.5)
    assert f[1, 0] == pytest.approx(20.0, abs=1.0) and f[2, 0] == pytest.approx(-20.0, abs=1.0)
    assert f[3, 0] == pytest.approx(cm.VIEW_RANGE_DEG[0])  # clamped to the views the table was made from


def test_shipped_table_slides_the_contour_most() -> None:
    corr = cm.shipped_correspondence()
    assert corr.view_offsets is not None and corr.spread_mm is not None
    slide = np.linalg.norm(corr.view_offsets[:, 0], axis=1)  # metres per radian of yaw
    contour = np.isin(corr.landmark_indices, cm.FACE_OVAL)
    eyes = np.isin(corr.landmark_indices, cm.EYE_A + cm.EYE_B)
    assert np.median(slide[contour]) > 2 * np.median(slide[eyes])
    assert np.median(corr.spread_mm[contour]) > np.median(corr.spread_mm[eyes])
    assert (corr.weights()[contour].mean() < corr.weights()[eyes].mean())
