"""The dataset's masks: the guided filter puts a coarse matte's edge on the image's edge, the neck cut removes
what is below the projected neck line, the mouth mask fills the inner-lip contour; and mediapipe's person
segmentation gives the astronaut a matte."""

from __future__ import annotations

import numpy as np

from drivers.avatar.flashavatar.create.correspondence import LIPS_INNER
from drivers.avatar.flashavatar.create.masks import (
    Segmenter,
    guided_filter,
    mouth_mask,
    neck_cut,
    neckhead_mask,
)
from tests.avatar.create.clips import astronaut


def test_guided_filter_moves_a_blurry_edge_onto_the_image_edge() -> None:
    guide = np.zeros((64, 64), np.float32)
    guide[:, 32:] = 1.0  # the image's edge at column 32
    coarse = np.clip((np.arange(64) - 20) / 24, 0, 1)[None].repeat(64, 0).astype(np.float32)  # a ramp 20..44
    out = guided_filter(guide, coarse, radius=6, eps=1e-4)
    row = out[32]
    step = row[32] - row[31]
    assert step > 0.25 and step > 5 * (coarse[32, 32] - coarse[32, 31])  # the matte jumps where the image does
    assert np.abs(np.diff(row)).argmax() == 31
    assert row[:10].max() < 0.01 and row[-10:].min() > 0.99


def test_neck_cut_removes_below_the_line() -> None:
    alpha = np.ones((100, 100), np.float32)
    neck = np.array([[20.0, 60.0], [50.0, 70.0], [80.0, 80.0]])  # a tilted neck rim
    cut = neck_cut(neck, 100)
    assert abs(cut[50] - 70) < 1 and cut[80] > cut[20]
    m = neckhead_mask(alpha, neck)
    assert m[50, 50] == 255 and m[95, 50] == 0 and m[:50].min() == 255
    assert (m[:, 80] > 0).sum() > (m[:, 20] > 0).sum()
    assert neckhead_mask(alpha, None).min() == 255  # no neck known: the whole person


def test_mouth_mask_fills_the_inner_lips() -> None:
    pts = np.zeros((478, 2), np.float32)
    ang = np.linspace(0, 2 * np.pi, len(LIPS_INNER), endpoint=False)
    pts[list(LIPS_INNER)] = np.stack([50 + 20 * np.cos(ang), 60 + 8 * np.sin(ang)], 1)
    m = mouth_mask(pts, (100, 100))
    assert m[60, 50] == 255 and m[60, 75] == 0 and m[40, 50] == 0
    assert 300 < (m > 0).sum() < 600  # about the ellipse's area (pi * 20 * 8 = 503)
    assert mouth_mask(None, (10, 10)).max() == 0


def test_person_segmentation_mattes_the_astronaut() -> None:
    img = astronaut()
    seg = Segmenter()
    a = seg.alpha(img)
    seg.close()
    assert a.shape == img.shape[:2] and a.dtype == np.float32
    assert a[120, 226] > 0.9  # her face
    assert a[30, 30] < 0.2  # the wall behind
    assert 0.2 < (a > 0.5).mean() < 0.8
