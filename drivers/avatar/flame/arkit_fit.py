"""Fitting the expression entries of a FLAME avatar's ARKit map on its own tracked frames.

Each ARKit expression name gets a landmark-geometry target: which iBUG-68 landmarks move and in which
direction (FLAME's frame: +x is the subject's left, +y up, +z out of the face). With the subject's shape and a
neutral pose, FLAME landmarks are linear in the expression code, so the landmark displacement is `J @ e`.
The fit restricts `e` to the span of the tracked expressions (`e = B c`, B from an SVD of the tracked codes, so
the result stays within what this person's tracking actually produced), and solves a weighted ridge
least-squares problem: named landmarks follow the target, all others stay still. The solution is then scaled so
that ARKit weight 1.0 equals the 95th percentile of the tracked frames' own motion along the target, i.e. a
strong but real expression of this person. Names the tracked frames never show are skipped (the generic map
keeps them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from drivers.avatar.flame.landmarks import LandmarkEmbedding

Vec3 = tuple[float, float, float]
Target = dict[int, Vec3]  # iBUG-68 point → direction

# iBUG-68 left/right mirror pairs (subject's right ↔ left); points on the midline map to themselves.
_PAIRS = [(i, 16 - i) for i in range(8)] + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
          (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59),
          (56, 58), (60, 64), (61, 63), (65, 67)]
MIRROR = {i: i for i in range(68)}
for _a, _b in _PAIRS:
    MIRROR[_a], MIRROR[_b] = _b, _a


def mirror(target: Target) -> Target:
    """The same movement on the other side of the face."""
    return {MIRROR[p]: (-d[0], d[1], d[2]) for p, d in target.items()}


_LEFT: dict[str, Target] = {
    "browDownLeft": {22: (-0.3, -1.0, 0.0), 23: (0.0, -1.0, 0.0), 24: (0.0, -0.7, 0.0)},
    "browOuterUpLeft": {25: (0.0, 1.0, 0.0), 26: (0.0, 1.0, 0.0)},
    "noseSneerLeft": {35: (0.0, 1.0, 0.0), 34: (0.0, 0.5, 0.0)},
    "cheekSquintLeft": {46: (0.0, 1.0, 0.0), 47: (0.0, 1.0, 0.0), 54: (0.0, 0.3, 0.0)},
    "mouthSmileLeft": {54: (0.6, 1.0, 0.0), 64: (0.5, 0.8, 0.0)},
    "mouthFrownLeft": {54: (0.0, -1.0, 0.0), 64: (0.0, -0.8, 0.0)},
    "mouthStretchLeft": {54: (1.0, -0.3, 0.0), 64: (0.8, -0.3, 0.0)},
    "mouthDimpleLeft": {54: (0.5, 0.0, -1.0), 64: (0.4, 0.0, -0.8)},
    "mouthPressLeft": {52: (0.0, -0.5, 0.0), 53: (0.0, -0.5, 0.0), 55: (0.0, 0.5, 0.0), 56: (0.0, 0.5, 0.0)},
    "mouthUpperUpLeft": {52: (0.0, 1.0, 0.0), 53: (0.0, 1.0, 0.0)},
    "mouthLowerDownLeft": {55: (0.0, -1.0, 0.0), 56: (0.0, -1.0, 0.0)},
    "mouthLeft": {p: (1.0, 0.0, 0.0) for p in range(48, 68)},
}

TARGETS: dict[str, Target] = {
    **_LEFT,
    **{k.replace("Left", "Right"): mirror(v) for k, v in _LEFT.items()},
    "browInnerUp": {21: (0.0, 1.0, 0.0), 22: (0.0, 1.0, 0.0)},
    "cheekPuff": {3: (-1.0, 0.0, 0.3), 4: (-1.0, 0.0, 0.3), 12: (1.0, 0.0, 0.3), 13: (1.0, 0.0, 0.3)},
    "mouthPucker": {48: (1.0, 0.0, 0.3), 54: (-1.0, 0.0, 0.3), 51: (0.0, 0.0, 1.0), 57: (0.0, 0.0, 1.0)},
    "mouthFunnel": {51: (0.0, 0.5, 1.0), 57: (0.0, -0.5, 1.0), 48: (0.5, 0.0, 0.5), 54: (-0.5, 0.0, 0.5)},
    "mouthRollUpper": {50: (0.0, -0.5, -1.0), 51: (0.0, -0.5, -1.0), 52: (0.0, -0.5, -1.0)},
    "mouthRollLower": {56: (0.0, 0.5, -1.0), 57: (0.0, 0.5, -1.0), 58: (0.0, 0.5, -1.0)},
    "mouthShrugUpper": {50: (0.0, 1.0, 0.0), 51: (0.0, 1.0, 0.0), 52: (0.0, 1.0, 0.0)},
    "mouthShrugLower": {56: (0.0, 1.0, 0.3), 57: (0.0, 1.0, 0.3), 58: (0.0, 1.0, 0.3)},
    "jawForward": {7: (0.0, 0.0, 1.0), 8: (0.0, 0.0, 1.0), 9: (0.0, 0.0, 1.0), 57: (0.0, 0.0, 1.0)},
}


@dataclass
class FitResult:
    name: str
    expression: NDArray[np.float32] | None  # (100,) for ARKit weight 1.0, or None when skipped
    reason: str  # why skipped, or a one-line summary of the fit
    alignment: float = 0.0  # cosine between achieved and target motion of the named landmarks
    reach: float = 0.0  # target-direction landmark motion at weight 1.0 (model units, metres for FLAME)


def expression_subspace(codes: NDArray[np.floating], energy: float = 0.99, max_dims: int = 40) -> NDArray[np.float64]:
    """(100,k) orthonormal basis of the tracked expression codes (uncentred: zero is FLAME's neutral face)."""
    e = np.asarray(codes, dtype=np.float64)
    _, s, vt = np.linalg.svd(e, full_matrices=False)
    power = s**2
    if power.sum() <= 1e-20:
        return np.zeros((e.shape[1], 0))
    k = int(np.searchsorted(np.cumsum(power) / power.sum(), energy) + 1)
    k = max(1, min(k, max_dims, int((s > s[0] * 1e-6).sum())))
    return vt[:k].T


def _target_vector(target: Target, emb: LandmarkEmbedding) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """(L*3,) unit target and (L*3,) mask of the named landmarks, or None when a named point is missing."""
    t = np.zeros((emb.count, 3))
    mask = np.zeros((emb.count, 3))
    for p, d in target.items():
        r = emb.row(p)
        if r is None:
            return None
        t[r] = np.asarray(d) / max(float(np.linalg.norm(d)), 1e-12)
        mask[r] = 1.0
    flat = t.reshape(-1)
    return flat / np.linalg.norm(flat), mask.reshape(-1)


def fit_targets(
    jacobian: NDArray[np.floating],
    codes: NDArray[np.floating],
    emb: LandmarkEmbedding,
    names: Sequence[str] | None = None,
    rest_weight: float = 0.2,
    ridge: float = 1e-3,
    percentile: float = 95.0,
) -> list[FitResult]:
    """Fit every target; `jacobian` is (L*3, 100): landmark displacement per unit of each expression coefficient,
    `codes` the tracked expression codes (N,100)."""
    J = np.asarray(jacobian, dtype=np.float64)
    E = np.asarray(codes, dtype=np.float64)
    B = expression_subspace(E)
    motion = E @ J.T  # (N, L*3): landmark motion of each tracked frame
    typical = float(np.median(np.linalg.norm(motion, axis=1))) / np.sqrt(emb.count)
    results: list[FitResult] = []
    for name in names or list(TARGETS):
        target = TARGETS[name]
        tv = _target_vector(target, emb)
        if tv is None:
            results.append(FitResult(name, None, f"needs landmarks {sorted(target)} that this embedding lacks"))
            continue
        t, mask = tv
        if B.shape[1] == 0:
            results.append(FitResult(name, None, "the tracked frames carry no expression"))
            continue
        A = J @ B  # (L*3, k)
        w = np.where(mask > 0, 1.0, rest_weight) ** 2
        AtW = A.T * w
        lhs = AtW @ A
        lam = ridge * float(np.trace(lhs)) / lhs.shape[0]
        c = np.linalg.solve(lhs + lam * np.eye(lhs.shape[0]), AtW @ t)
        d = A @ c
        gain = float(d @ t)
        observed = float(np.percentile(motion @ t, percentile))
        if gain <= 1e-12 or observed <= 1e-3 * typical or observed <= 0:
            results.append(FitResult(name, None, "the tracked frames never move that way"))
            continue
        scale = observed / gain
        named = d * mask
        align = float(named @ t) / max(float(np.linalg.norm(named)), 1e-12)
        expr = (scale * (B @ c)).astype(np.float32)
        results.append(FitResult(name, expr, f"alignment {align:.2f}, reach {observed * 1000:.2f} mm", align,
                                 observed))
    return results


def landmark_jacobian(neutral_lmk: NDArray[np.floating], unit_lmk: NDArray[np.floating]) -> NDArray[np.float64]:
    """(L*3, 100) from landmarks at the neutral face (L,3) and with each expression coefficient at 1 (100,L,3)."""
    diff = np.asarray(unit_lmk, dtype=np.float64) - np.asarray(neutral_lmk, dtype=np.float64)[None]
    return diff.reshape(diff.shape[0], -1).T
