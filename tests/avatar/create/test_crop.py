"""The crop follows the head smoothly: detections with per-frame noise give a track with no jitter that still
follows a real move, frames without a face are bridged, and the crop is the box's pixels."""

from __future__ import annotations

import numpy as np

from drivers.avatar.flashavatar.create.crop import CROP_SCALE, crop, jitter_px, smooth_track


def test_noisy_detections_give_a_smooth_track_that_follows_the_head() -> None:
    rng = np.random.default_rng(0)
    n = 200
    t = np.arange(n) / 25
    true_c = np.stack([640 + 150 * np.sin(t * 0.8), 360 + 40 * np.cos(t * 0.5)], axis=1)  # a slow head move
    noisy = true_c + rng.normal(0, 4, (n, 2))
    sizes = 200 + rng.normal(0, 6, n)
    valid = np.ones(n, bool)
    raw = np.concatenate([noisy - sizes[:, None] * CROP_SCALE / 2, noisy + sizes[:, None] * CROP_SCALE / 2], 1)
    track = smooth_track(noisy, sizes, valid)
    assert len(track) == n
    assert jitter_px(track.boxes) < jitter_px(raw) / 10  # the detector's shake is gone
    centre = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
    assert np.median(np.abs(centre[:, 0] - true_c[:, 0])) < 3  # and the move is kept
    side = track.boxes[:, 2] - track.boxes[:, 0]
    assert np.allclose(side, track.boxes[:, 3] - track.boxes[:, 1])  # square
    assert abs(np.median(side) - 200 * CROP_SCALE) < 10


def test_frames_without_a_face_are_bridged() -> None:
    n = 50
    centers = np.stack([np.linspace(100, 200, n), np.full(n, 100.0)], axis=1)
    valid = np.ones(n, bool)
    valid[20:30] = False
    centers[~valid] = 0  # what a missing detection leaves
    track = smooth_track(centers, np.full(n, 50.0), valid)
    cx = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    assert np.all(np.diff(cx) > 0)  # no jump to 0 and back
    assert abs(cx[25] - 151) < 3


def test_crop_takes_the_box_and_fills_outside_with_black() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 140:160] = 255  # a white square
    out = crop(img, np.array([130.0, 30.0, 170.0, 70.0]), size=80)  # the square is in the middle half
    assert out.shape == (80, 80, 3)
    assert out[25:55, 25:55].min() > 200 and out[:15].max() < 30
    edge = crop(img, np.array([180.0, -20.0, 220.0, 20.0]), size=40)  # half outside the frame
    assert edge[:, 25:].max() == 0
