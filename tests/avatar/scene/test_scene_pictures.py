"""The demo head framed at 1280x720 over a background picture with a torso plate (cut by `avatar torso` from the
recorded person), checked by pixels: the background shows exactly where alpha is 0, the head sits where the
framing puts it, the torso meets the neck with no gap row, it follows the neck, and alpha comes only while an
output wants it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bridge.cli import run
from bridge.core.alpha_demand import AlphaDemand
from bridge.core.config import load_config
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import RenderedImage
from bridge.runtime import build
from drivers.avatar.demo.avatar import HEAD_CENTER, HEAD_RADIUS
from drivers.avatar.scene.avatar import SceneAvatar
from tests.avatar.scene import person

W, H = 1280, 720


def wall_picture(path: Path) -> np.ndarray:
    """A picture with structure everywhere (a gradient and stripes), 4:3 so covering 16:9 crops it."""
    y, x = np.mgrid[0:600, 0:800]
    rgb = np.stack([x * 255 // 800, y * 255 // 600, ((x // 40 + y // 40) % 2) * 200 + 30], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[SceneAvatar, AlphaDemand]:
    root = tmp_path_factory.mktemp("scene")
    person.write_video(root / "talk.mp4")
    person.write_dataset(root / "dataset")
    assert run(["avatar", "torso", str(root / "dataset"), "--video", str(root / "talk.mp4"),
                "--out", str(root / "torso.npz")]) == 0
    wall_picture(root / "wall.png")
    cfg = load_config(None, overrides={"video": {"width": W, "height": H},
                                       "avatar": {"background": str(root / "wall.png"),
                                                  "torso": str(root / "torso.npz"), "renderer": "cpu"}}, environ={})
    demand = AlphaDemand()
    avatar = build.avatar(cfg, demand)
    return avatar, demand


def render_with_alpha(avatar: SceneAvatar, demand: AlphaDemand, params: FaceParams) -> RenderedImage:
    demand.claim("test")
    try:
        return avatar.render(params)
    finally:
        demand.release("test")


def test_background_shows_where_alpha_is_zero(scene: tuple[SceneAvatar, AlphaDemand]) -> None:
    avatar, demand = scene
    plain = avatar.render(FaceParams.neutral())
    assert plain.alpha is None and plain.foreground is None  # no output wants alpha: none is made
    image = render_with_alpha(avatar, demand, FaceParams.neutral())
    assert image.rgb.shape == (H, W, 3) and image.alpha is not None and image.foreground is not None
    background = avatar.background.frame(0.0)
    empty = image.alpha == 0
    assert empty.mean() > 0.6
    assert np.array_equal(image.rgb[empty], background[empty])  # exactly the picture, untouched
    assert image.foreground[empty].max() == 0
    # Opaque avatar pixels are the avatar's colour, whatever is behind; soft edges are premultiplied over (two
    # layers, each rounded once: within 2 of the one-step formula).
    alpha = image.alpha.astype(np.int32)
    expected = image.foreground.astype(np.int32) + (background.astype(np.int32) * (255 - alpha[..., None]) + 127) // 255
    assert np.abs(np.minimum(expected, 255) - image.rgb.astype(np.int32)).max() <= 2
    assert np.array_equal(plain.rgb, image.rgb)  # alpha costs the outputs without it nothing in their picture
    # The background covers the frame: the 4:3 picture scaled to 1280 wide, its middle rows kept.
    assert background[0, 0, 0] < 10 and background[0, -1, 0] > 245


def test_head_sits_where_the_framing_says(scene: tuple[SceneAvatar, AlphaDemand]) -> None:
    avatar, _ = scene
    head = avatar.head.render(FaceParams.neutral())
    assert head.alpha is not None and head.rgb.shape[:2] == (avatar.head.height, avatar.head.width)
    assert avatar.head.width * avatar.head.height < 0.25 * W * H  # only its region is rendered
    f = avatar.framing
    r_px = f.head_height * H / 2
    ox, oy = head.origin
    ys, xs = np.nonzero(head.alpha >= 128)
    xs, ys = xs + ox, ys + oy
    upper = ys < f.eye_line * H  # the skull above the head's centre: symmetric and unhidden by the neck
    assert abs(xs[upper].mean() - f.center_x * W) < 0.03 * r_px
    # The top of the hair: the bounding sphere's top, less the sphere's margin over the demo's skull.
    top = ys.min()
    assert f.eye_line * H - 1.0 * r_px <= top <= f.eye_line * H - 0.8 * r_px, (top, f.eye_line * H, r_px)
    width = xs[upper].max() - xs[upper].min()
    assert 1.1 * r_px < width < 2.0 * r_px  # the head's size follows head_height
    assert HEAD_RADIUS > 0 and len(HEAD_CENTER) == 3


def test_torso_meets_the_neck_with_no_gap_row(scene: tuple[SceneAvatar, AlphaDemand]) -> None:
    avatar, demand = scene
    torso = avatar.torso
    assert torso is not None
    for params in (FaceParams.neutral(), FaceParams(head=np.array([0.0, 0.35, 0.0], np.float32)),
                   FaceParams(head=np.array([0.2, 0.0, 0.1], np.float32), jaw=np.array([0.3, 0, 0], np.float32))):
        image = render_with_alpha(avatar, demand, params)
        head = avatar.head.render(params)
        assert image.alpha is not None and head.alpha is not None
        # The junction: the neck's middle half of columns, from half a neck width above the neck line (the
        # demo's neck is about a neck width long: above that a turned chin leaves the columns) to one below.
        x, y = (round(v) for v in torso.at)
        half = round(torso.neck_width / 4)
        above, reach = round(torso.neck_width / 2), round(torso.neck_width)
        zone = image.alpha[y - above : y + reach, x - half : x + half + 1]
        worst = zone.min(axis=1)
        # Every row nearly opaque (the demo's splatted neck itself lets a few per cent through).
        gap = np.flatnonzero(worst < 200)
        assert len(gap) == 0, f"rows {gap[:5] + y - above} show the background ({worst.min()})"
        # Without the torso the rows below the neck line would be empty: the plate is what closes them.
        ox, oy = head.origin
        alone = np.zeros((H, W), np.uint8)
        alone[oy : oy + head.alpha.shape[0], ox : ox + head.alpha.shape[1]] = head.alpha
        assert alone[y + 4 : y + reach, x - half : x + half + 1].max() < 64


def test_torso_follows_the_neck(scene: tuple[SceneAvatar, AlphaDemand]) -> None:
    avatar, _ = scene
    torso = avatar.torso
    assert torso is not None
    rest = torso.layer(0.0, 0.0, 0.0)
    moved = torso.layer(12.0, -5.0, 0.0)
    assert (moved.x0 - rest.x0, moved.y0 - rest.y0) == (12, -5)
    turned = torso.layer(0.0, 0.0, 0.1)
    assert turned.alpha.shape == rest.alpha.shape
    for layer in (rest, turned):  # scaled and turned as premultiplied colour: never brighter than its coverage
        assert (layer.rgb.astype(int) <= layer.alpha[..., None].astype(int) + 1).all()
    assert not np.array_equal(turned.alpha, rest.alpha)
    # Turning about the anchor keeps the anchor's pixel where it was.
    ax, ay = round(torso.anchor[0]), round(torso.anchor[1])
    assert abs(int(turned.alpha[ay + 3, ax]) - int(rest.alpha[ay + 3, ax])) < 30
