"""A stand-in FLAME with the real structure, built on the FLAME template mesh, for ground-truth test videos.

FLAME itself cannot be shipped or downloaded, but its template geometry (`FlameMesh.obj`) and eyelid
blendshapes are at hand. This builds the rest so the head articulates like FLAME: joints where a head has them
(neck base, neck, jaw hinge, the two eyeball centres), skinning weights that hang the lower face on the jaw and
the eyeballs on the eyes, smooth low-frequency shape components (overall proportions first) and smooth local
expression components on the face. Pose correctives are zero. The arrays have FLAME 2020's layout, so
`FlameModel` runs them unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from drivers.avatar.flame.model import N_EXPR, N_SHAPE
from drivers.avatar.flame.obj import load_obj

# FLAME's vertex order: the two eyeballs are the last 2 x 546 vertices (left eye first, on +x).
LEFT_EYEBALL = slice(3931, 4477)
RIGHT_EYEBALL = slice(4477, 5023)
N_VERTICES = 5023


def _smoothstep(x: NDArray[np.float64]) -> NDArray[np.float64]:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _regressor_row(verts: NDArray[np.float64], target: NDArray[np.float64], k: int = 24) -> NDArray[np.float64]:
    """Minimum-norm weights on the k vertices nearest `target` that sum to 1 and reproduce it exactly."""
    near = np.argsort(np.linalg.norm(verts - target, axis=1))[:k]
    a = np.vstack([verts[near].T, np.ones(k)])
    w = np.linalg.pinv(a) @ np.append(target, 1.0)
    row = np.zeros(len(verts))
    row[near] = w
    return row


def _bumps(rng: np.random.Generator, verts: NDArray[np.float64], centres: NDArray[np.float64], sigma: float,
           amplitude: float, count: int) -> NDArray[np.float64]:
    """`count` displacement fields (V,3,count), each a few Gaussian bumps with random directions."""
    out = np.zeros((len(verts), 3, count))
    for c in range(count):
        for _ in range(3):
            centre = centres[rng.integers(len(centres))]
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            fall = np.exp(-np.sum((verts - centre) ** 2, axis=1) / (2 * sigma**2))
            out[:, :, c] += amplitude * fall[:, None] * d
    return out


def build_synthetic_flame(mesh_path: Path | str, seed: int = 0) -> dict[str, Any]:
    """FLAME arrays (v_template, f, shapedirs, posedirs, J_regressor, weights, kintree_table) on the template."""
    mesh = load_obj(mesh_path)
    v = mesh.vertices.astype(np.float64)
    if len(v) != N_VERTICES:
        raise ValueError(f"{mesh_path} has {len(v)} vertices; the FLAME template has {N_VERTICES}")
    rng = np.random.default_rng(seed)
    eye_l, eye_r = v[LEFT_EYEBALL].mean(0), v[RIGHT_EYEBALL].mean(0)
    eyes = np.zeros(len(v), bool)
    eyes[LEFT_EYEBALL] = eyes[RIGHT_EYEBALL] = True
    front = v[:, 2].max()
    nose_y = v[np.argmax(np.where(eyes, -np.inf, v[:, 2])), 1]
    seam_y = nose_y - 0.035  # the lips part about 3.5 cm below the nose tip
    neck_y = v[:, 1].min()
    joints = np.array([
        [0.0, neck_y + 0.06, -0.045],  # root: the base of the skull over the neck
        [0.0, neck_y + 0.09, -0.035],  # neck
        [0.0, eye_l[1] - 0.04, eye_l[2] - 0.075],  # jaw hinge, in front of the ears
        eye_l, eye_r,
    ])
    # Skinning: eyeballs on the eyes; the face below the lips on the jaw; the head on the neck; the lower neck
    # on the root.
    w = np.zeros((len(v), 5))
    on_neck = _smoothstep((v[:, 1] - (neck_y + 0.02)) / 0.05)
    lower = _smoothstep((seam_y + 0.0005 - v[:, 1]) / 0.002) * _smoothstep((v[:, 2] - (front - 0.16)) / 0.05) \
        * _smoothstep((v[:, 1] - (neck_y + 0.06)) / 0.03)
    w[:, 2] = lower
    w[:, 1] = (1 - lower) * on_neck
    w[:, 0] = (1 - lower) * (1 - on_neck)
    w[eyes] = 0.0
    w[LEFT_EYEBALL, 3] = 1.0
    w[RIGHT_EYEBALL, 4] = 1.0
    regressor = np.stack([_regressor_row(v, j) for j in joints[:3]]
                         + [np.where(np.arange(len(v)) < LEFT_EYEBALL.stop, 1.0, 0.0) * eyes / 546.0,
                            np.where(np.arange(len(v)) >= RIGHT_EYEBALL.start, 1.0, 0.0) / 546.0])
    # Shape: proportions (width, height, depth about the head's centre), then smooth broad bumps.
    centre = v[~eyes].mean(0)
    shape = np.zeros((len(v), 3, N_SHAPE))
    for axis in range(3):
        shape[:, axis, axis] = (v[:, axis] - centre[axis]) * 0.03
    shape[:, :, 3:] = _bumps(rng, v, v[~eyes], 0.035, 0.002, N_SHAPE - 3)
    # Expression: local bumps on the face's front (lips, cheeks, brows), none on the eyeballs.
    face = v[(v[:, 2] > front - 0.06) & ~eyes]
    expr = _bumps(rng, v, face, 0.012, 0.0015, N_EXPR)
    for ball, c in ((LEFT_EYEBALL, eye_l), (RIGHT_EYEBALL, eye_r)):  # eyeballs move rigidly with the shape
        near = np.argsort(np.linalg.norm(np.where(eyes[:, None], np.inf, v - c), axis=1))[:30]
        shape[ball] = shape[near].mean(0)
        expr[ball] = 0.0
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64)
    return {"v_template": v.astype(np.float32), "f": mesh.faces.astype(np.int64),
            "shapedirs": np.concatenate([shape, expr], axis=2).astype(np.float32),
            "posedirs": np.zeros((len(v), 3, 36), np.float32), "J_regressor": regressor.astype(np.float32),
            "weights": w.astype(np.float32), "kintree_table": kintree}
