"""The default config's picture: the demo head at 1280x720 with its own shoulders over the studio backdrop, no
setting needed, checked by pixels: a non-black wall, shoulders under the neck with no gap row, and alpha
outputs that still get alpha 0 (and nothing of the wall) away from the person."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.config import load_config
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import RenderedImage
from bridge.runtime import build
from drivers.avatar.demo.torso import demo_torso
from drivers.avatar.scene.avatar import SceneAvatar
from drivers.avatar.scene.background import StudioBackground, open_background

W, H = 1280, 720


@pytest.fixture(scope="module")
def default_scene() -> tuple[SceneAvatar, AlphaDemand]:
    cfg = load_config(None, overrides={}, environ={})  # nothing set: the product as it ships
    assert (cfg.video.width, cfg.video.height) == (W, H) and cfg.avatar.background is None
    assert cfg.avatar.torso is None and cfg.avatar.kind == "demo"
    demand = AlphaDemand()
    return build.avatar(cfg, demand), demand


def with_alpha(avatar: SceneAvatar, demand: AlphaDemand) -> RenderedImage:
    demand.claim("test")
    try:
        return avatar.render(FaceParams.neutral())
    finally:
        demand.release("test")


def test_default_background_is_a_lit_wall_not_black(default_scene: tuple[SceneAvatar, AlphaDemand]) -> None:
    avatar, _ = default_scene
    assert isinstance(avatar.background, StudioBackground)
    wall = avatar.background.frame(0.0).astype(np.float64)
    assert wall.shape == (H, W, 3) and wall.min() > 40  # nowhere black
    # A soft vertical gradient, lighter behind the head than in the corners (a gentle vignette), no hard edge.
    assert wall[:40].mean() > wall[-40:].mean() + 15
    assert wall[int(0.4 * H), W // 2].mean() > wall[0, 0].mean() + 10
    assert np.abs(np.diff(wall.mean(axis=2), axis=1)).max() < 6
    picture = avatar.render(FaceParams.neutral()).rgb
    assert picture[0, 0].mean() > 100 and picture[-1, 0].mean() > 60  # the corners show the wall


def test_shoulders_sit_under_the_neck_with_no_gap_row(default_scene: tuple[SceneAvatar, AlphaDemand]) -> None:
    avatar, demand = default_scene
    torso = avatar.torso
    assert torso is not None  # the demo gets its shoulders without a setting
    image = with_alpha(avatar, demand)
    assert image.alpha is not None
    x, y = (round(v) for v in torso.at)
    half = round(torso.neck_width / 4)
    # From a neck width above the neck line down to the frame's bottom, the neck's middle columns are person.
    column = image.alpha[y - round(torso.neck_width) :, x - half : x + half + 1].min(axis=1)
    gap = np.flatnonzero(column < 200)
    assert len(gap) == 0, f"rows {gap[:5] + y - round(torso.neck_width)} show the wall"
    # The head alone ends at the neck line: the plate is what fills the rows below it.
    head = avatar.head.render(FaceParams.neutral())
    assert head.alpha is not None
    oy = head.origin[1]
    assert oy + np.flatnonzero(head.alpha.max(axis=1) >= 128).max() <= y + 1
    # Shoulders, not a column: at the frame's bottom the person is well over three necks wide, and the neck
    # shows between the chin and the collar (the collar does not swallow it).
    bottom = np.flatnonzero(image.alpha[-1] >= 128)
    assert bottom.max() - bottom.min() > 3.5 * torso.neck_width
    assert abs((bottom.max() + bottom.min()) / 2 - x) < 0.1 * torso.neck_width
    skin = image.rgb[y - round(torso.neck_width / 2), x].astype(int)
    assert skin[0] > skin[2] + 30  # warm skin at the neck, above the collar
    assert demo_torso() is demo_torso()  # made once per process


def test_alpha_outputs_stay_transparent_away_from_the_person(default_scene: tuple[SceneAvatar, AlphaDemand]
                                                              ) -> None:
    avatar, demand = default_scene
    image = with_alpha(avatar, demand)
    assert image.alpha is not None and image.foreground is not None
    empty = image.alpha == 0
    assert empty.mean() > 0.6 and empty[0, 0] and empty[0, -1] and empty[H // 2, 0]
    assert image.foreground[empty].max() == 0  # the wall is only in the picture for outputs without alpha
    wall = avatar.background.frame(0.0)
    assert np.array_equal(image.rgb[empty], wall[empty])
    assert image.alpha[-1, round(avatar.torso.at[0]) if avatar.torso else W // 2] == 255


def test_the_studio_backdrop_is_the_default_by_name() -> None:
    assert isinstance(open_background(None, 64, 36), StudioBackground)
    cfg = load_config(None, overrides={"avatar": {"kind": "demo", "background": "#102030"}}, environ={})
    assert cfg.avatar.background == (16 / 255, 32 / 255, 48 / 255)  # a set background is kept as it is
