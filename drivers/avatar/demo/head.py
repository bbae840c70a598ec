"""The demo head's canonical Gaussians, generated in code (metres; y up, +z out of the face, +x the head's left).

The head is an ellipsoid skull shaped by a few smooth bumps (nose, brow ridge, cheeks, chin, lips) and a
tapered jaw, sampled with Fibonacci points. Every Gaussian carries what the rig needs to pose it: its region,
an outward normal (for back-face culling), a jaw weight and five displacement fields for the expression
channels. Colours are baked once with a fixed key light, so the renderer only needs plain RGB (SH degree 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bridge.core.rotations import matrix_to_quat

F = NDArray[np.float32]
D = NDArray[np.float64]

SKULL = np.array([0.076, 0.104, 0.094])  # ellipsoid semi-axes
EYE_X, EYE_Y = 0.031, 0.024  # eye centres at (±EYE_X, EYE_Y)
EYE_R = 0.0122  # eyeball radius
LID_R = EYE_R * 1.1  # eyelid shell radius
ALMOND_W, ALMOND_H = 0.0145, 0.0072  # half width / height of the eye opening in the skin
MOUTH_Y, MOUTH_W = -0.05, 0.023  # the lip line and the mouth's half width
JAW_HINGE = np.array([0.0, -0.012, 0.0])
NECK_PIVOT = np.array([0.0, -0.075, -0.012])
NECK_BOTTOM = -0.16  # the neck's lowest ring, where the demo torso's collar takes over (a natural neck length)
NECK_RADII = (0.048, 0.047)  # x, z
LIGHT = np.array([-0.45, 0.55, 0.75]) / np.linalg.norm([-0.45, 0.55, 0.75])

# Region codes (one per Gaussian).
SKIN, HAIR, BROW, LIPS, MOUTH, TEETH, TONGUE, EYEBALL, IRIS, PUPIL, LID_UP, LID_LOW, SOCKET, EAR, NECK = range(15)
REGION_NAMES = ("skin", "hair", "brow", "lips", "mouth", "teeth", "tongue", "eyeball", "iris", "pupil",
                "upper_lid", "lower_lid", "socket", "ear", "neck")
CHANNELS = ("smile", "brow_raise", "frown", "pucker", "wide")


def smoothstep(e0: float, e1: float, x: D) -> D:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def fibonacci_sphere(n: int) -> D:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    return np.stack([np.sin(phi) * np.sin(theta), np.cos(phi), np.sin(phi) * np.cos(theta)], axis=1)


def _bump(x: D, y: D, cx: float, cy: float, sx: float, sy: float) -> D:
    return np.asarray(np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2)))


def skin_surface(d: D) -> D:
    """Unit directions (n,3) → points on the shaped head surface."""
    p = d * SKULL
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    front = smoothstep(0.0, 0.06, z)
    # Lower face narrower and deeper towards the chin; back of the head fuller.
    taper = 1.0 - 0.28 * smoothstep(-0.01, -0.1, y) * (0.4 + 0.6 * front)
    x = x * taper
    z = z * (1.0 - 0.1 * smoothstep(0.0, -0.1, y) * (1 - front)) + 0.006 * smoothstep(0.0, -0.06, z)
    # Flatten the face plane a little so the features sit on it.
    z = z - 0.01 * front * _bump(x, y, 0.0, 0.0, 0.05, 0.07)
    bumps = (
        0.024 * _bump(x, y, 0.0, -0.021, 0.0075, 0.01) * smoothstep(-0.036, -0.026, y)  # nose tip
        + 0.013 * _bump(x, y, 0.0, 0.0, 0.0065, 0.018) * smoothstep(-0.03, -0.01, y)  # nose bridge
        + 0.006 * _bump(x, y, 0.0, -0.024, 0.014, 0.007)  # nose wings
        + 0.006 * (_bump(x, y, EYE_X, EYE_Y + 0.016, 0.014, 0.005) + _bump(x, y, -EYE_X, EYE_Y + 0.016, 0.014, 0.005))
        + 0.005 * (_bump(x, y, 0.04, -0.012, 0.015, 0.015) + _bump(x, y, -0.04, -0.012, 0.015, 0.015))  # cheeks
        + 0.007 * _bump(x, y, 0.0, -0.085, 0.018, 0.01)  # chin
        + 0.0055 * _bump(x, y, 0.0, MOUTH_Y + 0.0045, 0.018, 0.0035)  # upper lip
        + 0.0060 * _bump(x, y, 0.0, MOUTH_Y - 0.006, 0.016, 0.004)  # lower lip
        - 0.009 * (_bump(x, y, EYE_X, EYE_Y, 0.013, 0.009) + _bump(x, y, -EYE_X, EYE_Y, 0.013, 0.009))  # sockets
        - 0.003 * _bump(x, y, 0.0, -0.066, 0.014, 0.005)  # under the lower lip
    )
    z = z + bumps * front
    return np.stack([x, y, z], axis=1)


def _tangent_frame(d: D) -> tuple[D, D]:
    up = np.where(np.abs(d[:, 1:2]) > 0.9, np.array([[1.0, 0, 0]]), np.array([[0.0, 1, 0]]))
    t1 = np.cross(up, d)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    return t1, np.cross(d, t1)


def surface_with_normals(d: D, f: Callable[[D], D] = skin_surface) -> tuple[D, D, D]:
    """Points, unit outward normals and the first tangent of a star-shaped surface f(direction)."""
    t1, t2 = _tangent_frame(d)
    h = 1e-4
    p = f(d)
    du = f(_unit(d + h * t1)) - f(_unit(d - h * t1))
    dv = f(_unit(d + h * t2)) - f(_unit(d - h * t2))
    n = np.cross(du, dv)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    flip = np.sum(n * p, axis=1) < 0  # star-shaped about the origin: outward means away from it
    n[flip] *= -1
    return p, n, du / np.linalg.norm(du, axis=1, keepdims=True)


def _unit(v: D) -> D:
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True))


def frames_to_quats(t: D, n: D) -> D:
    """Quaternions (w,x,y,z) of rotations whose columns are (t, n x t, n): local z along the normal."""
    t = _unit(t - np.sum(t * n, axis=1, keepdims=True) * n)
    b = np.cross(n, t)
    m = np.stack([t, b, n], axis=2)  # columns
    return matrix_to_quat(m)


@dataclass
class Part:
    """A batch of Gaussians of one region."""

    region: int
    means: D
    normals: D
    tangents: D
    scales: D  # (n,3) along tangent, bitangent, normal
    albedo: D  # (n,3)
    opacity: float = 0.99
    cull: bool = True
    shade: bool = True
    extra: dict[str, D] = field(default_factory=dict)


@dataclass
class HeadModel:
    """Canonical Gaussians of the demo head plus the rig's per-Gaussian data (all float32 numpy)."""

    means: F
    quats: F
    scales: F
    opacities: F
    colors: F
    normals: F
    region: NDArray[np.int8]
    cull: NDArray[np.bool_]
    jaw_weight: F
    neck_weight: F  # 1 follows the head fully, 0 stays with the body
    fields: F  # (5, N, 3) displacement per expression channel at value 1
    eye_side: NDArray[np.int8]  # 0 left eye, 1 right eye, -1 not an eye part
    lid_uv: F  # (N,2) eyelid (azimuth, v) for lid Gaussians
    eye_centres: D  # (2,3) left, right

    def __len__(self) -> int:
        return int(self.means.shape[0])


def _almond(x: D, y: D) -> D:
    """>0 inside either eye opening (in the face plane)."""
    out = np.full(x.shape, -1.0)
    for sx in (1, -1):
        u = (x - sx * EYE_X) / ALMOND_W
        lim = ALMOND_H * np.clip(1 - u * u, 0, None) ** 0.7
        # A slight upward tilt towards the outer corner.
        yc = EYE_Y + 0.0015 * u * sx
        out = np.maximum(out, np.where(np.abs(u) < 1, lim - np.abs(y - yc), -1.0))
    return out


def _hairline(p: D) -> D:
    """>0 where the hair cap covers the skull."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    az = np.arctan2(x, z)  # 0 front, ±π back
    s = (1 - np.cos(az)) / 2
    line = 0.066 - 0.05 * s**0.8 - 0.09 * s**3
    # A gap above the ears.
    ear = _bump(np.abs(az), y, math.pi / 2 + 0.05, 0.0, 0.35, 0.035)
    return np.asarray(y - line - 0.03 * ear * (s > 0.2))


def _skin_albedo(p: D, rng: np.random.Generator) -> tuple[D, NDArray[np.bool_]]:
    x, y = p[:, 0], p[:, 1]
    base = np.array([0.86, 0.64, 0.52])
    col = np.tile(base, (len(p), 1)) * (1 + 0.025 * rng.standard_normal((len(p), 1)))
    cheek = _bump(np.abs(x), y, 0.04, -0.018, 0.013, 0.012)[:, None]
    col = col * (1 - 0.12 * cheek) + np.array([0.88, 0.5, 0.45]) * 0.12 * cheek
    # Lips: a bow-shaped band around the lip line.
    u = x / MOUTH_W
    lip_up = MOUTH_Y + 0.0075 * np.clip(1 - u * u, 0, None) ** 0.5 + 0.0012 * np.cos(u * 6)
    lip_low = MOUTH_Y - 0.0105 * np.clip(1 - u * u, 0, None) ** 0.6
    lips = (np.abs(u) < 1.05) & (y < lip_up) & (y > lip_low) & (p[:, 2] > 0.04)
    col[lips] = np.array([0.74, 0.36, 0.36]) * (1 + 0.03 * rng.standard_normal((int(lips.sum()), 1)))
    nostril = np.maximum(_bump(x, y, 0.0075, -0.0305, 0.0028, 0.0018), _bump(x, y, -0.0075, -0.0305, 0.0028, 0.0018))
    col = col * (1 - 0.75 * nostril[:, None])
    return col, lips


def shade(albedo: D, n: D, amount: float = 1.0) -> D:
    """Albedo lit by the fixed key light, sky fill and rim (baked into the colours; the torso uses it too)."""
    lam = np.clip(n @ LIGHT, 0, None)[:, None]
    sky = (0.5 + 0.5 * n[:, 1:2]) * 0.18
    rim = np.clip(1 - n[:, 2:3], 0, 1) ** 3 * 0.05
    lit = albedo * (0.38 + 0.72 * lam + sky) + rim
    spec = np.clip(n @ _unit((LIGHT + np.array([0, 0, 1.0]))[None])[0], 0, None)[:, None] ** 40 * 0.12
    return np.asarray(np.clip(amount * (lit + spec) + (1 - amount) * albedo, 0, 1))


def _skin_and_hair(rng: np.random.Generator, n_skin: int) -> list[Part]:
    d = fibonacci_sphere(n_skin)
    p, n, t = surface_with_normals(d)
    keep = ~((_almond(p[:, 0], p[:, 1]) > -0.0006) & (p[:, 2] > 0.03))
    p, n, t, d = p[keep], n[keep], t[keep], d[keep]
    spacing = math.sqrt(4 * math.pi * 0.088**2 / n_skin)
    line = _hairline(p)
    hair = line > 0
    skin = line < 0.012  # skin runs on a little under the hair's edge, so no gap shows at the hairline
    parts = []
    col, lips = _skin_albedo(p[skin], rng)
    sk = Part(SKIN, p[skin], n[skin], t[skin], np.tile([spacing * 0.65, spacing * 0.65, spacing * 0.12],
                                                        (int(skin.sum()), 1)), col)
    parts.append(sk)
    # The lip-painted part of the skin is its own region (the rig moves it like skin).
    parts.append(Part(LIPS, sk.means[lips], sk.normals[lips], sk.tangents[lips], sk.scales[lips], sk.albedo[lips]))
    sk.means, sk.normals, sk.tangents, sk.scales, sk.albedo = (
        a[~lips] for a in (sk.means, sk.normals, sk.tangents, sk.scales, sk.albedo))
    # Hair: the skull points under the cap pushed out into a cap with some volume.
    hp, hn = p[hair], n[hair]
    layers = [(hp + hn * (0.0045 + 0.0015 * smoothstep(0.0, 0.09, hp[:, 1:2])), hn)]
    for lp, ln in layers:
        down = np.array([0.0, -1.0, 0.0]) - ln * ln[:, 1:2] * -1.0
        down = _unit(down - np.sum(down * ln, axis=1, keepdims=True) * ln + 1e-6)
        k = len(lp)
        tone = 1 + 0.18 * rng.standard_normal((k, 1))
        albedo = np.clip(np.array([0.2, 0.12, 0.07]) * tone, 0, 1)
        sc = np.tile([spacing * 0.52, spacing * 1.05, spacing * 0.3], (k, 1))
        # Strands run along the local 'down' direction: put the long axis (index 1) there.
        parts.append(Part(HAIR, lp + ln * 0.001 * rng.standard_normal((k, 1)), ln, np.cross(down, ln), sc, albedo))
    return parts


def _on_face(x: D, y: D, lift: float) -> tuple[D, D, D]:
    """Points of the skin surface straight in front of (x, y), lifted along the normal."""
    d = _unit(np.stack([x / SKULL[0], y / SKULL[1], np.ones_like(x)], axis=1))
    for _ in range(6):  # refine the direction so the surface point has the wanted x, y
        p = skin_surface(d)
        d = _unit(np.stack([d[:, 0] + (x - p[:, 0]) / SKULL[0], d[:, 1] + (y - p[:, 1]) / SKULL[1], d[:, 2]], 1))
    p, n, t = surface_with_normals(d)
    return p + n * lift, n, t


def _brows(rng: np.random.Generator, per: int) -> list[Part]:
    parts = []
    for sx in (1.0, -1.0):
        u = rng.random(per)  # 0 inner end, 1 outer end
        ax = 0.011 + 0.041 * u
        ay = EYE_Y + 0.0165 + 0.006 * np.sin(math.pi * (0.15 + 0.75 * u)) - 0.002 * u
        width = 0.0045 * (1 - 0.55 * u)
        ay = ay + width * (rng.random(per) - 0.5)
        p, n, _ = _on_face(sx * ax, ay, 0.0012)
        tang = np.stack([np.full(per, sx), 0.15 * (0.5 - u), np.zeros(per)], 1)
        tone = 1 + 0.15 * rng.standard_normal((per, 1))
        albedo = np.clip(np.array([0.17, 0.1, 0.06]) * tone, 0, 1)
        sc = np.tile([0.0021, 0.00075, 0.0004], (per, 1))
        br = Part(BROW, p, n, _unit(tang), sc, albedo)
        br.extra["inner"] = 1 - u
        parts.append(br)
    return parts


def _eyes(rng: np.random.Generator, n_ball: int) -> tuple[list[Part], D]:
    """Eyeballs (white, iris, pupil) and the dark socket behind each opening; returns the eye centres."""
    parts: list[Part] = []
    centres = []
    for side, sx in enumerate((1.0, -1.0)):
        start = len(parts)
        surf = _on_face(np.array([sx * EYE_X]), np.array([EYE_Y]), 0.0)[0][0]
        c = np.array([sx * EYE_X, EYE_Y, surf[2] - EYE_R * 0.62])
        centres.append(c)
        d = fibonacci_sphere(n_ball * 2)
        d = d[d[:, 2] > -0.2]
        ang = np.arccos(np.clip(d[:, 2], -1, 1))
        iris_r, pupil_r = 0.5, 0.2
        sclera = ang > iris_r
        tint = np.clip(1 - 0.25 * smoothstep(0.6, 1.6, ang), 0, 1)[:, None]
        white = np.array([0.95, 0.93, 0.9]) * tint + np.array([0.05, 0.0, 0.0]) * (1 - tint)
        sp = EYE_R * math.sqrt(4 * math.pi / (n_ball * 2)) * 0.8
        ball = Part(EYEBALL, c + d[sclera] * EYE_R, d[sclera], _tangent_frame(d[sclera])[0],
                    np.tile([sp, sp, sp * 0.3], (int(sclera.sum()), 1)), white[sclera], shade=False)
        ball.albedo = shade(ball.albedo, ball.normals, 0.5)
        di = d[~sclera]
        ai = ang[~sclera]
        rad = ai / iris_r
        theta = np.arctan2(di[:, 1], di[:, 0])
        streak = 0.5 + 0.5 * np.sin(theta * 23 + rng.random() * 6)
        iris_col = (np.array([0.3, 0.42, 0.52]) * (0.75 + 0.35 * rad[:, None]) * (0.85 + 0.2 * streak[:, None]))
        iris_col = np.where((rad > 0.88)[:, None], np.array([0.12, 0.15, 0.18]), iris_col)
        pupil = ai < pupil_r
        iris_col[pupil] = np.array([0.03, 0.03, 0.035])
        spi = sp * 0.75
        for mask, region, lift in ((~pupil, IRIS, 1.004), (pupil, PUPIL, 1.008)):
            m = int(mask.sum())
            parts.append(Part(region, c + di[mask] * EYE_R * lift, di[mask], _tangent_frame(di[mask])[0],
                              np.tile([spi, spi, spi * 0.3], (m, 1)), iris_col[mask], shade=False))
        # Catch-light on the cornea: a small bright spot that stays with the iris.
        hl = np.array([[-0.25, 0.28, 1.0]])
        hl = _unit(hl)
        parts.append(Part(PUPIL, c + hl * EYE_R * 1.012, hl, _tangent_frame(hl)[0], np.array([[6e-4, 6e-4, 2e-4]]),
                          np.array([[1.0, 1.0, 1.0]]), shade=False))
        ball.extra["side"] = np.full(len(ball.means), float(side))
        parts.append(ball)
        for prt in parts[start:]:
            prt.extra["side"] = np.full(len(prt.means), float(side))
        # Socket: a dark pink backing behind the opening, seen at the corners.
        g = rng.random((260, 2)) * 2 - 1
        sx_, sy_ = c[0] + g[:, 0] * ALMOND_W * 1.05, c[1] + g[:, 1] * ALMOND_H * 1.3
        sp_ = np.stack([sx_, sy_, np.full(260, c[2] + 0.2 * EYE_R)], 1)
        nz = np.tile([0.0, 0.0, 1.0], (260, 1))
        parts.append(Part(SOCKET, sp_, nz, np.tile([1.0, 0, 0], (260, 1)), np.tile([0.0009, 0.0009, 0.0003], (260, 1)),
                          np.tile([0.42, 0.2, 0.2], (260, 1)), cull=False, shade=False))
    return parts, np.array(centres)


def lid_points(uv: D, side: D, lid: D, centres: D) -> D:
    """Upper-lid Gaussian positions for eyelid values `lid` (per point; 0 open, 1 closed, <0 wide)."""
    a, v = uv[:, 0], uv[:, 1]
    u = np.sin(a) * LID_R / ALMOND_W
    shape = np.clip(1 - u * u, 0, None) ** 0.7
    y_top = ALMOND_H * shape + 0.0035
    y_open = 0.62 * ALMOND_H * shape
    y_closed = -0.85 * ALMOND_H * shape
    y_edge = np.where(lid >= 0, y_open + (y_closed - y_open) * np.clip(lid, 0, 1.2),
                      y_open - lid * 0.9 * (ALMOND_H * shape - y_open) / 0.25)
    y = y_top + v * (y_edge - y_top)
    e = np.arcsin(np.clip(y / LID_R, -0.95, 0.95))
    c = centres[side.astype(int)]
    return np.asarray(c + LID_R * np.stack([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)], 1))


def _lids(rng: np.random.Generator, centres: D, per: int) -> list[Part]:
    parts = []
    na, nv = int(per / 14), 14
    for side in (0, 1):
        aa, vv = np.meshgrid(np.linspace(-1.25, 1.25, na), np.linspace(0, 1, nv))
        uv = np.stack([aa.ravel(), vv.ravel()], 1)
        sd = np.full(len(uv), float(side))
        p = lid_points(uv, sd, np.zeros(len(uv)), centres)
        nrm = _unit(p - centres[side])
        albedo = np.tile([0.82, 0.58, 0.49], (len(uv), 1)) * (1 - 0.12 * uv[:, 1:2])
        lash = uv[:, 1] > 0.9
        albedo[lash] = [0.09, 0.06, 0.05]
        sc = np.tile([0.0011, 0.0011, 0.0003], (len(uv), 1))
        sc[lash] = [0.0011, 0.0006, 0.0003]
        up = Part(LID_UP, p, nrm, _tangent_frame(nrm)[0], sc, albedo)
        up.extra["side"] = sd
        up.extra["lid_u"], up.extra["lid_v"] = uv[:, 0], uv[:, 1]
        parts.append(up)
        # Lower lid: a thin static rim along the bottom of the opening.
        a = np.linspace(-1.2, 1.2, 48)
        vv2 = np.linspace(0, 1, 4)
        A, V = np.meshgrid(a, vv2)
        u = np.sin(A) * LID_R / ALMOND_W
        shape = np.clip(1 - u * u, 0, None) ** 0.7
        y = -ALMOND_H * shape * (1.05 - 0.25 * V) - 0.0006
        e = np.arcsin(np.clip(y / LID_R, -0.95, 0.95))
        q = centres[side] + LID_R * np.stack([np.sin(A) * np.cos(e), np.sin(e), np.cos(A) * np.cos(e)], -1).reshape(-1, 3)
        nq = _unit(q - centres[side])
        low = Part(LID_LOW, q, nq, _tangent_frame(nq)[0], np.tile([0.0009, 0.0008, 0.0003], (len(q), 1)),
                   np.tile([0.8, 0.52, 0.47], (len(q), 1)))
        low.extra["side"] = np.full(len(q), float(side))
        parts.append(low)
    return parts


def _mouth(rng: np.random.Generator) -> list[Part]:
    parts = []
    front = _on_face(np.array([0.0]), np.array([MOUTH_Y]), 0.0)[0][0, 2]

    def sheet(n: int, x0: float, x1: float, y0: float, y1: float, depth: float, color: tuple[float, float, float],
              region: int, size: float) -> Part:
        g = rng.random((n, 2))
        x = x0 + (x1 - x0) * g[:, 0]
        y = y0 + (y1 - y0) * g[:, 1]
        z = front - depth - 0.012 * (x / 0.03) ** 2
        inside = z < _on_face(x, y, 0.0)[0][:, 2] - 0.007  # never poke through the skin
        x, y, z = x[inside], y[inside], z[inside]
        n = len(x)
        p = np.stack([x, y, z], 1)
        nz = np.tile([0.0, 0.0, 1.0], (n, 1))
        col = np.clip(np.array(color) * (1 + 0.05 * rng.standard_normal((n, 1))), 0, 1)
        return Part(region, p, nz, np.tile([1.0, 0, 0], (n, 1)), np.tile([size, size, size * 0.3], (n, 1)), col,
                    opacity=0.98, cull=False, shade=False)

    back = sheet(450, -0.025, 0.025, MOUTH_Y - 0.027, MOUTH_Y + 0.006, 0.028, (0.1, 0.025, 0.03), MOUTH, 0.0014)
    back.extra["jaw"] = smoothstep(MOUTH_Y - 0.005, MOUTH_Y - 0.03, back.means[:, 1]) * 0.7
    parts.append(back)
    ut = sheet(260, -0.017, 0.017, MOUTH_Y - 0.0015, MOUTH_Y + 0.005, 0.0095, (0.93, 0.9, 0.84), TEETH, 0.0009)
    ut.extra["jaw"] = np.zeros(len(ut.means))
    lt = sheet(220, -0.015, 0.015, MOUTH_Y - 0.009, MOUTH_Y - 0.003, 0.011, (0.88, 0.85, 0.79), TEETH, 0.0009)
    lt.extra["jaw"] = np.ones(len(lt.means))
    tongue = sheet(240, -0.017, 0.017, MOUTH_Y - 0.02, MOUTH_Y - 0.009, 0.019, (0.62, 0.26, 0.28), TONGUE, 0.0018)
    tongue.extra["jaw"] = np.ones(len(tongue.means))
    parts += [ut, lt, tongue]
    return parts


def _ears(rng: np.random.Generator, per: int) -> list[Part]:
    parts = []
    for sx in (1.0, -1.0):
        d = fibonacci_sphere(per)
        semi = np.array([0.006, 0.027, 0.016])
        p = d * semi
        n = _unit(d / semi)
        ang = -0.35 * sx
        rot = np.array([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
        p = p @ rot.T + np.array([sx * 0.071, 0.004, -0.012])
        n = n @ rot.T
        rim = np.clip(np.linalg.norm(d[:, 1:] , axis=1), 0, 1)[:, None]
        albedo = np.array([0.84, 0.58, 0.5]) * (0.85 + 0.15 * rim)
        sp = 0.0022
        parts.append(Part(EAR, p, n, _tangent_frame(n)[0], np.tile([sp, sp, sp * 0.25], (per, 1)), albedo))
    return parts


def neck_albedo(y: D) -> D:
    """The neck's skin colour at height y (darker down the neck, away from the face)."""
    return np.asarray(np.array([0.8, 0.58, 0.47])[None, :] * (0.8 + 0.2 * smoothstep(-0.2, -0.08, y))[:, None])


def _neck(rng: np.random.Generator, n: int) -> Part:
    k = int(math.sqrt(n / 2.2))
    th, yy = np.meshgrid(np.linspace(-math.pi, math.pi, int(k * 2.2), endpoint=False), np.linspace(NECK_BOTTOM, -0.075, k))
    th = th + (np.arange(k)[:, None] % 2) * (math.pi / (k * 2.2))
    rx, rz = NECK_RADII
    p = np.stack([rx * np.sin(th), yy, -0.014 + rz * np.cos(th)], -1).reshape(-1, 3)
    nrm = _unit(np.stack([np.sin(th) / rx, np.zeros_like(th), np.cos(th) / rz], -1).reshape(-1, 3))
    sp = 2 * math.pi * 0.047 / (k * 2.2) * 0.6
    albedo = neck_albedo(p[:, 1])
    tang = np.tile([0.0, 1.0, 0.0], (len(p), 1))  # first scale runs along the neck
    return Part(NECK, p, nrm, tang, np.tile([sp * 1.35, sp, sp * 0.2], (len(p), 1)), albedo)


def _expression_fields(p: D, region: NDArray[np.int8], inner: D) -> D:
    """Displacement per Gaussian at full strength of each channel (CHANNELS order)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    front = smoothstep(0.035, 0.065, z)
    out = np.zeros((len(CHANNELS), len(p), 3))
    sgn = np.where(x >= 0, 1.0, -1.0)
    mouth_parts = np.isin(region, (SKIN, LIPS, MOUTH, TEETH, TONGUE))
    # smile: mouth corners up and out, cheeks up.
    corner = _bump(np.abs(x), y, MOUTH_W, MOUTH_Y, 0.011, 0.01) * front
    cheek = _bump(np.abs(x), y, 0.036, -0.028, 0.014, 0.012) * front
    lipband = _bump(x, y, 0.0, MOUTH_Y, 0.02, 0.008) * front
    w = corner * mouth_parts
    out[0, :, 0] = sgn * 0.007 * w + 0.12 * x * lipband * mouth_parts
    out[0, :, 1] = 0.009 * w + 0.003 * cheek
    out[0, :, 2] = -0.002 * w + 0.0015 * cheek
    # brow_raise: brows and the forehead above them up.
    brow = (region == BROW).astype(np.float64)
    fore = smoothstep(EYE_Y + 0.005, EYE_Y + 0.015, y) * (1 - smoothstep(0.07, 0.09, y)) * front * (region == SKIN)
    out[1, :, 1] = 0.0085 * brow + 0.005 * fore * smoothstep(0.06, 0.0, np.abs(np.abs(x) - EYE_X))
    # frown: brows down and together, most at the inner ends.
    inner_w = brow * (0.35 + 0.65 * inner)
    glabella = _bump(x, y, 0.0, EYE_Y + 0.012, 0.012, 0.01) * front * (region == SKIN)
    out[2, :, 0] = -sgn * 0.0035 * inner_w
    out[2, :, 1] = -0.0055 * inner_w - 0.002 * glabella
    out[2, :, 2] = 0.0015 * inner_w
    # pucker / wide: the lip region narrows and pushes forward, or spreads and flattens.
    lip_w = _bump(x, y, 0.0, MOUTH_Y - 0.001, 0.026, 0.011) * mouth_parts
    lip_w *= np.where(np.isin(region, (SKIN, LIPS)), front, 1.0)
    toward = MOUTH_Y - y
    out[3, :, 0] = -0.38 * x * lip_w
    out[3, :, 1] = 0.25 * toward * lip_w
    out[3, :, 2] = 0.009 * lip_w * np.clip(1 - (x / (1.2 * MOUTH_W)) ** 2, 0, 1)
    out[4, :, 0] = 0.28 * x * lip_w
    out[4, :, 1] = 0.15 * toward * lip_w
    out[4, :, 2] = -0.002 * lip_w
    return out


def _jaw_weight(p: D, region: NDArray[np.int8]) -> D:
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    band = 0.0004 + 0.022 * smoothstep(0.75 * MOUTH_W, 1.9 * MOUTH_W, ax)
    w = np.clip(0.5 + (MOUTH_Y - 0.0003 - y) / (2 * band), 0, 1)
    # Only the lower face in front of the hinge moves; fade towards the ears and the back.
    w *= smoothstep(-0.03, 0.04, z) * smoothstep(JAW_HINGE[1], JAW_HINGE[1] - 0.03, y) ** 0.5
    w *= np.where(region == NECK, 0.0, 1.0)
    return w


def build_head(n_skin: int = 19000, seed: int = 7) -> HeadModel:
    """Generate the demo head; deterministic for a given seed (about 27k Gaussians by default)."""
    rng = np.random.default_rng(seed)
    parts: list[Part] = []
    parts += _skin_and_hair(rng, n_skin)
    parts += _brows(rng, 320)
    eye_parts, centres = _eyes(rng, 700)
    parts += eye_parts
    parts += _lids(rng, centres, 560)
    parts += _mouth(rng)
    parts += _ears(rng, 380)
    parts.append(_neck(rng, 1800))

    def cat(get: Callable[[Part], D]) -> D:
        return np.concatenate([get(pt) for pt in parts])

    means = cat(lambda q: q.means)
    normals = cat(lambda q: q.normals)
    region = cat(lambda q: np.full(len(q.means), q.region)).astype(np.int8)
    colors = cat(lambda q: shade(q.albedo, q.normals) if q.shade else q.albedo)
    inner = cat(lambda q: q.extra.get("inner", np.zeros(len(q.means))))
    side = cat(lambda q: q.extra.get("side", np.full(len(q.means), -1.0))).astype(np.int8)
    lid_uv = cat(lambda q: np.stack([q.extra.get("lid_u", np.zeros(len(q.means))),
                                     q.extra.get("lid_v", np.zeros(len(q.means)))], 1))
    jaw = _jaw_weight(means, region)
    jaw_given = cat(lambda q: q.extra.get("jaw", np.full(len(q.means), np.nan)))
    jaw = np.where(np.isnan(jaw_given), jaw, jaw_given)
    jaw[np.isin(region, (EYEBALL, IRIS, PUPIL, LID_UP, LID_LOW, SOCKET, HAIR, BROW, EAR))] = 0.0
    neck_w = np.where(region == NECK, smoothstep(NECK_BOTTOM, -0.06, means[:, 1]), 1.0)
    quats = frames_to_quats(cat(lambda q: q.tangents), normals)
    return HeadModel(
        means=means.astype(np.float32), quats=quats.astype(np.float32), scales=cat(lambda q: q.scales).astype(np.float32),
        opacities=cat(lambda q: np.full(len(q.means), q.opacity)).astype(np.float32),
        colors=np.clip(colors, 0, 1).astype(np.float32), normals=normals.astype(np.float32), region=region,
        cull=cat(lambda q: np.full(len(q.means), q.cull)).astype(bool), jaw_weight=jaw.astype(np.float32),
        neck_weight=neck_w.astype(np.float32), fields=_expression_fields(means, region, inner).astype(np.float32),
        eye_side=side, lid_uv=lid_uv.astype(np.float32), eye_centres=centres,
    )
