"""The demo head's shoulders: a torso plate drawn in code, so the default picture is a person, not a head.

Upper chest and shoulders in a plain crew-neck top, seen from the front, in the head's metres (x to the head's
left, y up) and lit by the head's own key light (`head.shade`: the skin of the neck's base matches the rendered
neck). The collar's opening is where the neck's lowest ring (`NECK_BOTTOM`) meets the body; above that line
the plate keeps a stub of neck skin that the rendered neck covers, so no gap opens at the join. The plate is in
`scene.torso`'s format (premultiplied RGBA, the neck line's centre, the neck's width), so the scene places,
follows and composites it like a plate cut from a user's video. Drawn at 2x and averaged: soft edges.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

from drivers.avatar.demo.head import LIGHT, NECK_BOTTOM, NECK_RADII, neck_albedo, shade, smoothstep
from drivers.avatar.scene.torso import TorsoPlate

D = NDArray[np.float64]

PIXELS_PER_METRE = 1000.0  # the scene scales the plate to the rendered neck
SUPERSAMPLE = 2
LEFT, RIGHT, TOP, BOTTOM = -0.25, 0.25, -0.13, -0.60  # the plate's extent in metres
SHOULDER = 0.215  # half the shoulders' width (a grown-up's, for the demo head's size)
CAP = 0.06  # the shoulder's roundness (radius)
CHEST = 0.17  # half the chest's width, where the body turns away from the camera
COLLAR_W, COLLAR_D = 0.056, 0.026  # the neckline's half width and how far it dips below the neck's base
RIB = 0.009  # the collar's ribbed band
SHIRT = np.array([0.17, 0.22, 0.32])  # a calm navy top
RIB_SHIRT = SHIRT * 0.8


def top_line(ax: D) -> D:
    """The body's upper outline (y) at |x|: trapezius from the neck's side down to the shoulder, which rounds
    off into the arm."""
    slope = NECK_BOTTOM + 0.03 - 0.07 * smoothstep(0.045, 0.17, ax) ** 0.8
    cap = np.clip((ax - (SHOULDER - CAP)) / CAP, 0.0, 1.0)
    return np.asarray(slope - 1.3 * CAP * (1.0 - np.sqrt(1.0 - cap * cap)))


def _unit(v: D) -> D:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True))


def _draw(ppm: float) -> tuple[D, D]:
    """(straight colour (h, w, 3) in [0, 1], coverage (h, w) in {0, 1}) at `ppm` pixels per metre."""
    w, h = round((RIGHT - LEFT) * ppm), round((TOP - BOTTOM) * ppm)
    x = LEFT + (np.arange(w) + 0.5) / ppm
    y = TOP - (np.arange(h) + 0.5) / ppm
    X, Y = np.meshgrid(x, y)
    ax = np.abs(X)
    top = top_line(ax)
    arm = SHOULDER + 0.012 * smoothstep(-0.3, -0.55, Y)  # the arms hang a little wider than the shoulders
    body = (ax < arm) & (top > Y)
    below = np.clip(NECK_BOTTOM - Y, 0.0, None)
    opening = np.sqrt((X / COLLAR_W) ** 2 + (below / COLLAR_D) ** 2) < 1.0
    neck = (ax < NECK_RADII[0] * 0.97) & (Y >= NECK_BOTTOM)  # under the rendered neck: covered by it
    skin = neck | (opening & body)
    rib = body & ~skin & (np.sqrt((X / (COLLAR_W + RIB)) ** 2 + (below / (COLLAR_D + RIB)) ** 2) < 1.0)

    # Skin: the neck's base widening into the chest, lit like the neck's Gaussians.
    sx = np.clip(X / COLLAR_W, -0.95, 0.95)
    skin_n = _unit(np.stack([sx, 0.25 * smoothstep(0.0, COLLAR_D, below), np.sqrt(1.0 - sx * sx)], -1))
    skin_rgb = shade(neck_albedo(Y.reshape(-1)), skin_n.reshape(-1, 3)).reshape(h, w, 3)
    # Cloth: a rounded chest turning away at the sides, facing up along the shoulders' top.
    cx = np.clip(X / (CHEST + 0.06), -0.97, 0.97)
    chest = np.stack([cx * 0.8, np.zeros_like(X), np.sqrt(1.0 - cx * cx)], -1)
    up = np.exp(-np.clip(top - Y, 0.0, None) / 0.025)[..., None]
    outward = np.stack([np.sign(X) * smoothstep(SHOULDER - 0.06, SHOULDER, ax), np.zeros_like(X), np.zeros_like(X)],
                       -1)
    n = _unit(chest * (1.0 - up) + up * np.array([0.0, 1.0, 0.35]) + 1.5 * outward)
    lam = np.clip(n @ LIGHT, 0.0, None)[..., None]
    sky = (0.5 + 0.5 * n[..., 1:2]) * 0.18
    albedo = np.where(rib[..., None], RIB_SHIRT, SHIRT)
    cloth = albedo * (0.38 + 0.72 * lam + sky)
    # The head's soft shadow under the chin, and the folds darkening towards the armpits.
    cloth *= 1.0 - 0.28 * np.exp(-(((X + 0.015) / 0.07) ** 2 + ((Y - NECK_BOTTOM + 0.035) / 0.035) ** 2))[..., None]
    cloth *= 1.0 - 0.15 * (smoothstep(CHEST - 0.03, SHOULDER, ax) * smoothstep(-0.26, -0.4, Y))[..., None]
    colour = np.where(skin[..., None], skin_rgb, cloth)
    return np.clip(colour, 0.0, 1.0), (body | skin).astype(np.float64)


@functools.lru_cache(maxsize=1)
def demo_torso() -> TorsoPlate:
    """The plate (made once per process, about a third of a second on one core)."""
    s = SUPERSAMPLE
    colour, cover = _draw(PIXELS_PER_METRE * s)
    h, w = cover.shape[0] // s, cover.shape[1] // s
    pre = (colour * cover[..., None])[: h * s, : w * s].reshape(h, s, w, s, 3).mean(axis=(1, 3))
    alpha = cover[: h * s, : w * s].reshape(h, s, w, s).mean(axis=(1, 3))
    rgba = np.concatenate([pre, alpha[..., None]], -1)
    rgba = np.round(rgba * 255.0).astype(np.uint8)
    rgba[..., :3] = np.minimum(rgba[..., :3], rgba[..., 3:])  # premultiplied: never brighter than coverage
    anchor = ((0.0 - LEFT) * PIXELS_PER_METRE, (TOP - NECK_BOTTOM) * PIXELS_PER_METRE)
    return TorsoPlate(np.ascontiguousarray(rgba), anchor, 2.0 * NECK_RADII[0] * PIXELS_PER_METRE)
