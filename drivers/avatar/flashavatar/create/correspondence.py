"""Where mediapipe's face-mesh landmarks lie on the FLAME surface: one triangle and barycentric per landmark.

The fitter needs, for each landmark it uses, the FLAME surface point that the landmark model reports. The
project derives this itself (`derive_correspondence`, run as `python -m
drivers.avatar.flashavatar.create.correspondence`): the FLAME template is textured with a real face photo
(`synthetic_video.FaceTexture`), rendered from several views, the landmark model is run on each render, and each
landmark pixel is looked up in the renderer's triangle-id/barycentric buffers, which puts it on the surface. The
views' surface points are averaged in template space and projected back to the nearest surface point. Iris
centres land on the eyeballs (so they drive the eye rotation); eyelid points land on the lids (so they drive the
eyelid blendshapes). The shipped table (`data/mediapipe_flame.npz`) is that result; a user's own
FLAME-provided embedding (`mediapipe_landmark_embedding.npz`) is read by `load_embedding`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError

N_MEDIAPIPE = 478  # 468 face-mesh points + 2 x 5 iris points
SHIPPED = Path(__file__).with_name("data") / "mediapipe_flame.npz"

# Landmark groups of mediapipe's face mesh (its published topology: contour rings by index).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
EYE_A = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_B = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
BROW_A = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
BROW_B = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
NOSE = (1, 2, 4, 5, 6, 19, 45, 275, 48, 278, 64, 294, 98, 327, 168, 197, 195)
IRIS_CENTRES = (468, 473)
UPPER_LIDS = (159, 158, 160, 386, 385, 387)
LOWER_LIDS = (145, 144, 153, 374, 373, 380)

# The subset the fitter uses by default; the contour is kept but weighted low (on a real face it is the
# silhouette, which slides over the surface as the head turns).
DEFAULT_LANDMARKS = tuple(sorted(set(FACE_OVAL + LIPS_OUTER + LIPS_INNER + EYE_A + EYE_B + BROW_A + BROW_B + NOSE
                                     + IRIS_CENTRES)))


N_VIEW_FEATURES = 4
VIEW_RANGE_DEG = (30.0, 20.0)  # yaw, pitch: the views the table is made from (features are clamped to them)


def view_features(R: NDArray[np.floating], t: NDArray[np.floating], centre: NDArray[np.floating]
                  ) -> NDArray[np.float64]:
    """(F,4) features of the direction from which OpenCV cameras R (F,3,3), t (F,3) see the head at `centre`
    (template frame): yaw, pitch, yaw², pitch² in radians (yaw > 0: the camera on the face's right)."""
    R = np.asarray(R, np.float64)
    cam = -np.einsum("fji,fj->fi", R, np.asarray(t, np.float64))  # camera centres in the template frame
    d = cam - np.asarray(centre, np.float64)
    yaw = np.clip(np.arctan2(-d[:, 0], d[:, 2]), *np.radians([-VIEW_RANGE_DEG[0], VIEW_RANGE_DEG[0]]))
    pitch = np.clip(np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2])),
                    *np.radians([-VIEW_RANGE_DEG[1], VIEW_RANGE_DEG[1]]))
    return np.stack([yaw, pitch, yaw**2, pitch**2], axis=1)


class CorrespondenceError(UserError, ValueError):
    """A landmark embedding file is missing, damaged or does not fit the FLAME mesh."""


@dataclass(frozen=True)
class Correspondence:
    """Landmark ids (L,) of the 478 face-mesh points, with FLAME triangle ids (L,) and barycentrics (L,3)."""

    landmark_indices: NDArray[np.int64]
    face_idx: NDArray[np.int64]
    bary: NDArray[np.float32]
    # How far (mm) the landmark model's point wandered over the surface between views when the table was made:
    # a measure of how loosely it is tied to the face (the contour most). None: equally trusted.
    spread_mm: NDArray[np.float32] | None = None
    # How the landmark model's point slides over the face with the viewing direction: (L,4,3) metres in the
    # template frame per view feature (see `view_features`). None: it stays put.
    view_offsets: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        n = len(self.landmark_indices)
        if self.face_idx.shape != (n,) or self.bary.shape != (n, 3):
            raise CorrespondenceError(f"a landmark embedding needs matching shapes: {n} landmark ids, face ids "
                                      f"{self.face_idx.shape}, barycentrics {self.bary.shape} (expected ({n},3))")
        if n == 0 or len(set(self.landmark_indices.tolist())) != n:
            raise CorrespondenceError("a landmark embedding needs at least one landmark and no repeated ids")
        if self.landmark_indices.min() < 0 or self.landmark_indices.max() >= N_MEDIAPIPE:
            raise CorrespondenceError(f"landmark ids must lie in 0..{N_MEDIAPIPE - 1} (mediapipe's face mesh)")
        if not np.all(np.isfinite(self.bary)) or np.abs(self.bary.sum(1) - 1).max() > 1e-3:
            raise CorrespondenceError("landmark barycentrics must be finite and sum to 1 per landmark")
        if self.spread_mm is not None and (self.spread_mm.shape != (n,) or not np.all(self.spread_mm >= 0)):
            raise CorrespondenceError(f"lmk_spread_mm must hold {n} non-negative values, one per landmark")
        if self.view_offsets is not None and (self.view_offsets.shape != (n, N_VIEW_FEATURES, 3)
                                              or not np.all(np.abs(self.view_offsets) < 1.0)):
            raise CorrespondenceError(f"lmk_view_offsets must be ({n},{N_VIEW_FEATURES},3) offsets in metres")

    def weights(self, typical_mm: float = 2.0) -> NDArray[np.float64]:
        """Per-landmark trust for the fitter: 1 for a point that stays put on the surface, less as it wanders."""
        if self.spread_mm is None:
            return np.ones(len(self.landmark_indices))
        return 1.0 / (1.0 + (self.spread_mm.astype(np.float64) / typical_mm) ** 2)

    def check_faces(self, num_faces: int) -> None:
        if self.face_idx.min() < 0 or self.face_idx.max() >= num_faces:
            raise CorrespondenceError(f"landmark face ids reach {int(self.face_idx.max())} but the FLAME mesh has "
                                      f"{num_faces} triangles; the embedding belongs to another mesh")

    def surface_points(self, vertices: NDArray[np.floating], faces: NDArray[np.integer]) -> NDArray[np.float64]:
        """(L,3) landmark positions on a mesh (V,3) with triangles (T,3)."""
        tri = np.asarray(vertices, np.float64)[np.asarray(faces)[self.face_idx]]  # (L,3,3)
        return np.einsum("lk,lkc->lc", self.bary.astype(np.float64), tri)

    def subset(self, ids: tuple[int, ...] | NDArray[np.int64]) -> Correspondence:
        """Only the given landmark ids (those this correspondence has)."""
        keep = np.isin(self.landmark_indices, np.asarray(ids))
        spread = None if self.spread_mm is None else self.spread_mm[keep]
        offsets = None if self.view_offsets is None else self.view_offsets[keep]
        return Correspondence(self.landmark_indices[keep], self.face_idx[keep], self.bary[keep], spread, offsets)

    def save(self, path: Path) -> None:
        """Written in FLAME's embedding layout (`lmk_face_idx`, `lmk_b_coords`, `landmark_indices`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays: dict[str, NDArray[np.generic]] = {
            "lmk_face_idx": self.face_idx.astype(np.int64), "lmk_b_coords": self.bary.astype(np.float32),
            "landmark_indices": self.landmark_indices.astype(np.int64)}
        if self.spread_mm is not None:
            arrays["lmk_spread_mm"] = self.spread_mm.astype(np.float32)
        if self.view_offsets is not None:
            arrays["lmk_view_offsets"] = self.view_offsets.astype(np.float32)
        np.savez(tmp, allow_pickle=False, **arrays)
        tmp.replace(path)


def load_embedding(path: Path | str) -> Correspondence:
    """A mediapipe↔FLAME embedding npz (FLAME's `mediapipe_landmark_embedding.npz` layout), checked."""
    path = Path(path)
    if not path.is_file():
        raise CorrespondenceError(f"landmark embedding {path} does not exist; give FLAME's "
                                  "mediapipe_landmark_embedding.npz or leave it out to use the shipped one")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in ("lmk_face_idx", "lmk_b_coords", "landmark_indices",
                                                    "lmk_spread_mm", "lmk_view_offsets") if k in z}
    except (OSError, ValueError) as exc:
        raise CorrespondenceError(f"{path} is not a readable npz file ({str(exc)[:120]})") from None
    missing = {"lmk_face_idx", "lmk_b_coords", "landmark_indices"} - set(arrays)
    if missing:
        raise CorrespondenceError(f"{path} lacks {', '.join(sorted(missing))}: a landmark embedding holds "
                                  "lmk_face_idx, lmk_b_coords and landmark_indices")
    for k in ("lmk_face_idx", "landmark_indices"):
        if not np.issubdtype(arrays[k].dtype, np.integer):
            raise CorrespondenceError(f"{path}: {k} must hold integers, not {arrays[k].dtype}")
    if not np.issubdtype(arrays["lmk_b_coords"].dtype, np.floating):
        raise CorrespondenceError(f"{path}: lmk_b_coords must hold floats, not {arrays['lmk_b_coords'].dtype}")
    spread = arrays.get("lmk_spread_mm")
    offsets = arrays.get("lmk_view_offsets")
    if any(a.dtype.kind != "f" for a in (spread, offsets) if a is not None):
        raise CorrespondenceError(f"{path}: lmk_spread_mm and lmk_view_offsets must hold floats")
    return Correspondence(arrays["landmark_indices"].reshape(-1).astype(np.int64),
                          arrays["lmk_face_idx"].reshape(-1).astype(np.int64),
                          arrays["lmk_b_coords"].reshape(-1, 3).astype(np.float32),
                          None if spread is None else spread.reshape(-1).astype(np.float32),
                          None if offsets is None else offsets.astype(np.float32))


def shipped_correspondence() -> Correspondence:
    """The project's own table, made by `derive_correspondence` (package data)."""
    return load_embedding(SHIPPED)


def closest_surface_points(points: NDArray[np.float64], vertices: NDArray[np.float64], faces: NDArray[np.int64],
                           radius: float = 0.03) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """For each point (P,3) the nearest point on the mesh, as (triangle id (P,), barycentrics (P,3)); triangles
    whose centroid is farther than `radius` from a point are not considered for it."""
    tri = vertices[faces]  # (T,3,3)
    centroid = tri.mean(1)
    out_f = np.zeros(len(points), np.int64)
    out_b = np.zeros((len(points), 3))
    for i, p in enumerate(points):
        cand = np.flatnonzero(np.linalg.norm(centroid - p, axis=1) < radius)
        if cand.size == 0:
            cand = np.argsort(np.linalg.norm(centroid - p, axis=1))[:32]
        bary = _closest_on_triangles(p, tri[cand])
        dist = np.linalg.norm(np.einsum("tk,tkc->tc", bary, tri[cand]) - p, axis=1)
        best = int(np.argmin(dist))
        out_f[i], out_b[i] = cand[best], bary[best]
    return out_f, out_b


def _closest_on_triangles(p: NDArray[np.float64], tri: NDArray[np.float64]) -> NDArray[np.float64]:
    """Barycentrics (T,3) of the point of each triangle (T,3,3) nearest p: the projection onto the plane when
    it falls inside, else the nearest point on the nearest edge."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    e0, e1, d = b - a, c - a, p - a
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    d20, d21 = (d * e0).sum(1), (d * e1).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 * d01) < 1e-20, 1e-20, d00 * d11 - d01 * d01)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.stack([1 - v - w, v, w], axis=1)
    outside = (bary < 0).any(1)
    if outside.any():
        best = np.full((outside.sum(), 3), np.nan)
        best_d = np.full(outside.sum(), np.inf)
        t_out = tri[outside]
        for i, j in ((0, 1), (1, 2), (2, 0)):
            seg = t_out[:, j] - t_out[:, i]
            s = np.clip(((p - t_out[:, i]) * seg).sum(1) / np.maximum((seg * seg).sum(1), 1e-20), 0, 1)
            dist = np.linalg.norm(t_out[:, i] + s[:, None] * seg - p, axis=1)
            better = dist < best_d
            cand = np.zeros((len(s), 3))
            cand[:, i] = 1 - s
            cand[:, j] = s
            best[better] = cand[better]
            best_d[better] = dist[better]
        bary[outside] = best
    return bary
