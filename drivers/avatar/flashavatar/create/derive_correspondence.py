"""How the shipped landmark↔FLAME table (`correspondence.SHIPPED`) is made: the face mesh is run on renders of
the FLAME template wearing a real face photo, and each landmark is put on the surface through the renderer's
buffers. Kept apart from `correspondence`, which the fitter reads, because making the table needs the renderer,
the test video's texture and the fitter's camera convention.

    python -m drivers.avatar.flashavatar.create.derive_correspondence path/to/FlameMesh.obj
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from bridge.core.rotations import axis_angle_to_matrix
from drivers.avatar.flame.obj import load_obj
from drivers.avatar.flashavatar.create.correspondence import (
    DEFAULT_LANDMARKS,
    LOWER_LIDS,
    N_VIEW_FEATURES,
    SHIPPED,
    UPPER_LIDS,
    VIEW_RANGE_DEG,
    Correspondence,
    CorrespondenceError,
    closest_surface_points,
    view_features,
)
from drivers.avatar.flashavatar.create.landmarks import FaceMesher
from drivers.avatar.flashavatar.create.raster import rasterise
from drivers.avatar.flashavatar.create.synthetic_video import astronaut_texture, render
from drivers.avatar.flashavatar.create.tracking import FLIP


def derive_correspondence(mesh_path: Path | str, views: int = 5, size: int = 512,
                          landmarks: tuple[int, ...] = DEFAULT_LANDMARKS + UPPER_LIDS + LOWER_LIDS
                          ) -> tuple[Correspondence, dict[str, float]]:
    """The landmark model run on renders of the textured template from views x views directions (yaw ±30°,
    pitch ±20°), each detected landmark put on the surface through the renderer's buffers, the views averaged
    in template space and snapped to the nearest surface point. Returns the table and its spread in mm."""
    detect = FaceMesher(still=True).points
    mesh = load_obj(mesh_path)
    v = mesh.vertices.astype(np.float64)
    faces = mesh.faces.astype(np.int64)
    texture = astronaut_texture(v, faces)
    centre = v[:3931].mean(0)
    K = np.array([[1.8 * size, 0, size / 2], [0, 1.8 * size, size / 2], [0, 0, 1]])
    lm = np.asarray(sorted(set(landmarks)))
    samples: list[NDArray[np.float64]] = []
    cams: list[tuple[NDArray[np.float64], NDArray[np.float64]]] = []
    for yaw in np.linspace(-VIEW_RANGE_DEG[0], VIEW_RANGE_DEG[0], views):
        for pitch in np.linspace(-VIEW_RANGE_DEG[1], VIEW_RANGE_DEG[1], views):
            rot = FLIP @ axis_angle_to_matrix(np.radians([pitch, yaw, 0.0]))
            move = np.array([0.0, 0.0, 0.62]) - rot @ centre
            cam = v @ rot.T + move
            image = render(cam, faces, K, size, texture)
            found = detect(image)
            if found is None:
                continue
            pix = cam[:, :2] / cam[:, 2:3] * K[0, 0] + size / 2
            frags = rasterise(torch.as_tensor(pix, dtype=torch.float32), torch.as_tensor(cam[:, 2], dtype=torch.float32),
                              torch.as_tensor(faces), size, size)
            points = np.full((len(lm), 3), np.nan)
            for k, idx in enumerate(lm):
                x, y = found[idx]
                xi, yi = round(float(x)), round(float(y))
                if not (0 <= xi < size and 0 <= yi < size):
                    continue
                fid = int(frags.face[yi, xi])
                if fid < 0:
                    continue
                # The exact landmark point within that triangle, perspective-correct, in template space.
                corners = pix[faces[fid]]
                m = np.array([[corners[0, 0], corners[1, 0], corners[2, 0]],
                              [corners[0, 1], corners[1, 1], corners[2, 1]], [1.0, 1.0, 1.0]])
                b2 = np.linalg.solve(m, np.array([x, y, 1.0]))
                b3 = b2 / cam[faces[fid], 2]
                b3 /= b3.sum()
                points[k] = b3 @ v[faces[fid]]
            samples.append(points)
            cams.append((rot, move))
    if len(samples) < 2:
        raise CorrespondenceError("the landmark model found the rendered template in fewer than 2 views")
    stack = np.stack(samples)  # (views, L, 3)
    mean = np.nanmedian(stack, axis=0)
    ok = np.isfinite(mean).all(1)
    spread = np.nanmedian(np.linalg.norm(stack - mean, axis=2), axis=0)
    face_ids, bary = closest_surface_points(mean[ok], v, faces)
    base = np.einsum("lk,lkc->lc", bary, v[faces[face_ids]])
    feats = view_features(np.stack([c[0] for c in cams]), np.stack([c[1] for c in cams]), base.mean(0))
    offsets = np.zeros((len(base), N_VIEW_FEATURES, 3))
    for k, li in enumerate(np.flatnonzero(ok)):
        seen = np.isfinite(stack[:, li]).all(1)
        if seen.sum() > 2 * N_VIEW_FEATURES:  # a ridge fit of the slide, so a few views cannot run away
            a = feats[seen]
            offsets[k] = np.linalg.solve(a.T @ a + 1e-3 * np.eye(N_VIEW_FEATURES), a.T @ (stack[seen, li] - base[k]))
    corr = Correspondence(lm[ok], face_ids, bary.astype(np.float32), (spread[ok] * 1000).astype(np.float32),
                          offsets.astype(np.float32))
    stats = {"views": float(len(samples)), "landmarks": float(ok.sum()),
             "median_spread_mm": float(np.nanmedian(spread) * 1000), "max_spread_mm": float(np.nanmax(spread) * 1000)}
    return corr, stats


def main() -> None:
    """Regenerate the shipped table: python -m drivers.avatar.flashavatar.create.derive_correspondence MESH.obj"""
    import sys

    mesh = sys.argv[1] if len(sys.argv) > 1 else "FlameMesh.obj"
    corr, stats = derive_correspondence(mesh)
    corr.save(SHIPPED)
    print(f"wrote {SHIPPED}: {stats}")


if __name__ == "__main__":
    main()
