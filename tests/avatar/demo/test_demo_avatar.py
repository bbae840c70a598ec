"""The embedded demo head on the CPU renderer: every FaceParams group visibly acts on its own part of the face.

Regions are found by projecting the head's own landmarks (eye centres, lip line) with the avatar's camera, so
the checks follow the geometry rather than hard-coded pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from bridge.core.errors import UserError
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import Avatar
from drivers.avatar.demo.avatar import DEMO_EXPRESSION_CHANNELS, DemoAvatar
from drivers.avatar.demo.head import EYE_X, EYE_Y, MOUTH_W, MOUTH_Y, REGION_NAMES, skin_surface
from tests.conftest import REPO

SIZE = 128
BG = (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def avatar() -> DemoAvatar:
    return DemoAvatar(SIZE, SIZE, renderer="cpu", device="cpu", background=BG)


@pytest.fixture(scope="module")
def big() -> DemoAvatar:
    """256x256, where an iris is large enough to measure partial lids and small gaze changes."""
    return DemoAvatar(256, 256, renderer="cpu", device="cpu", background=BG)


def px(avatar: DemoAvatar, x: float, y: float, z: float | None = None) -> tuple[float, float]:
    """Image position of a canonical point (on the face surface when z is None)."""
    if z is None:
        d = np.array([[x / 0.076, y / 0.104, 1.0]])
        for _ in range(8):
            p = skin_surface(d / np.linalg.norm(d))[0]
            d = d + np.array([[(x - p[0]) / 0.076, (y - p[1]) / 0.104, 0.0]])
        z = float(skin_surface(d / np.linalg.norm(d))[0][2])
    v = avatar.camera.viewmat.double().numpy()
    k = avatar.camera.K.double().numpy()
    c = v[:3, :3] @ np.array([x, y, z]) + v[:3, 3]
    return float(k[0, 0] * c[0] / c[2] + k[0, 2]), float(k[1, 1] * c[1] / c[2] + k[1, 2])


def box(avatar: DemoAvatar, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
    """Rows and columns of the image box spanning canonical face coordinates [x0, x1] x [y0, y1]."""
    (ax, ay), (bx, by) = px(avatar, x0, y1), px(avatar, x1, y0)
    return slice(int(ay), int(np.ceil(by)) + 1), slice(int(ax), int(np.ceil(bx)) + 1)


def params(**kw: object) -> FaceParams:
    p = FaceParams.neutral()
    for key, value in kw.items():
        if key in DEMO_EXPRESSION_CHANNELS:
            p.expression[DEMO_EXPRESSION_CHANNELS[key]] = float(value)  # type: ignore[arg-type]
        else:
            arr = getattr(p, key)
            arr[...] = np.asarray(value, np.float32).reshape(arr.shape)
    return p


def rgb(avatar: DemoAvatar, p: FaceParams) -> np.ndarray:
    return avatar.render(p).rgb.astype(np.float32)


def iris_mask(img: np.ndarray) -> np.ndarray:
    """Blue-grey iris pixels (skin is red-dominant, sclera neutral)."""
    r, b = img[..., 0], img[..., 2]
    return (b > r + 12) & (img.mean(axis=2) < 170)


def test_head_is_rich_and_implements_the_avatar_protocol(avatar: DemoAvatar) -> None:
    assert len(avatar.model) >= 20_000
    present = {REGION_NAMES[r] for r in np.unique(avatar.model.region)}
    assert present == set(REGION_NAMES)
    assert isinstance(avatar, Avatar)
    assert (avatar.name, avatar.width, avatar.height, avatar.device) == ("demo", SIZE, SIZE, "cpu")
    assert avatar.expression_channels == {"smile": 0, "brow_raise": 1, "frown": 2, "pucker": 3, "wide": 4}


def test_preset_channels_match_the_module() -> None:
    data = tomllib.loads((REPO / "presets" / "arkit_demo.toml").read_text())
    assert data["channels"] == DEMO_EXPRESSION_CHANNELS


def test_output_is_uint8_rgb_of_the_configured_size_and_deterministic() -> None:
    a = DemoAvatar(96, 64, renderer="cpu", device="cpu", background=(0.2, 0.4, 0.6))
    first, second = a.render(FaceParams.neutral()), a.render(FaceParams.neutral())
    assert first.rgb.dtype == np.uint8 and first.rgb.shape == (64, 96, 3) and first.alpha is None
    np.testing.assert_array_equal(first.rgb, second.rgb)
    # A fresh instance (sharing the cached geometry) renders the same picture.
    np.testing.assert_array_equal(DemoAvatar(96, 64, renderer="cpu", device="cpu",
                                             background=(0.2, 0.4, 0.6)).render(FaceParams.neutral()).rgb, first.rgb)
    assert tuple(first.rgb[0, 0]) == (51, 102, 153)  # the corner is background
    face = first.rgb[24:40, 40:56].astype(np.float32)
    assert face[..., 0].mean() > face[..., 2].mean() + 40  # skin in the middle


def test_transparent_gives_alpha() -> None:
    a = DemoAvatar(SIZE, SIZE, renderer="cpu", device="cpu", transparent=True, background=(1.0, 1.0, 1.0))
    out = a.render(FaceParams.neutral())
    assert out.alpha is not None and out.alpha.dtype == np.uint8 and out.alpha.shape == (SIZE, SIZE)
    assert out.alpha[0, 0] == 0 and np.percentile(out.alpha[40:90, 45:85], 5) > 230  # the face is opaque
    assert tuple(out.rgb[0, 0]) == (0, 0, 0)  # premultiplied over nothing: the background colour is not used


def test_jaw_opens_a_dark_mouth(avatar: DemoAvatar) -> None:
    rows, cols = box(avatar, -MOUTH_W, MOUTH_W, MOUTH_Y - 0.03, MOUTH_Y + 0.004)
    dark = [int((rgb(avatar, params(jaw=[j, 0, 0]))[rows, cols].mean(axis=2) < 60).sum()) for j in (0.0, 0.15, 0.3)]
    assert dark[1] > dark[0] + 15 and dark[2] > 1.3 * dark[1]


def test_blink_covers_the_irises(big: DemoAvatar) -> None:
    avatar = big
    rows, cols = box(avatar, -EYE_X - 0.015, EYE_X + 0.015, EYE_Y - 0.01, EYE_Y + 0.01)
    open_ = int(iris_mask(rgb(avatar, FaceParams.neutral())[rows, cols]).sum())
    closed = int(iris_mask(rgb(avatar, params(eyelids=[1, 1]))[rows, cols]).sum())
    half = int(iris_mask(rgb(avatar, params(eyelids=[0.5, 0.5]))[rows, cols]).sum())
    left_only = rgb(avatar, params(eyelids=[1, 0]))
    assert open_ > 40 and closed <= 0.05 * open_ and closed < half < open_
    # eyelids[0] is the head's left eye, which is on the image's right.
    lc, rc = px(avatar, EYE_X, EYE_Y)[0], px(avatar, -EYE_X, EYE_Y)[0]
    m = iris_mask(left_only[rows])
    xs = np.nonzero(m)[1]
    assert len(xs) > 0 and np.all(np.abs(xs - rc) < np.abs(xs - lc))


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_gaze_moves_the_iris(big: DemoAvatar) -> None:
    avatar = big
    rows = box(avatar, 0, 0, EYE_Y - 0.012, EYE_Y + 0.012)[0]
    base = _centroid(iris_mask(rgb(avatar, FaceParams.neutral())[rows]))
    yaw = _centroid(iris_mask(rgb(avatar, params(eyes=[[0, 0.4, 0], [0, 0.4, 0]]))[rows]))
    up = _centroid(iris_mask(rgb(avatar, params(eyes=[[-0.3, 0, 0], [-0.3, 0, 0]]))[rows]))
    assert yaw[0] - base[0] > 1.5 and abs(yaw[1] - base[1]) < 1.0  # towards the head's left = image right
    assert up[1] - base[1] < -1.0  # pitch < 0 looks up
    # Looking down, the upper lids follow the eyes and cover more of the irises.
    down = int(iris_mask(rgb(avatar, params(eyes=[[0.3, 0, 0], [0.3, 0, 0]]))[rows]).sum())
    assert down < 0.9 * int(iris_mask(rgb(avatar, FaceParams.neutral())[rows]).sum())


@pytest.mark.parametrize(
    ("channel", "region"),
    [
        ("smile", (-MOUTH_W - 0.015, MOUTH_W + 0.015, MOUTH_Y - 0.02, MOUTH_Y + 0.02)),
        ("pucker", (-MOUTH_W - 0.01, MOUTH_W + 0.01, MOUTH_Y - 0.02, MOUTH_Y + 0.015)),
        ("wide", (-MOUTH_W - 0.015, MOUTH_W + 0.015, MOUTH_Y - 0.02, MOUTH_Y + 0.015)),
        ("brow_raise", (-0.06, 0.06, EYE_Y + 0.005, EYE_Y + 0.04)),
        ("frown", (-0.06, 0.06, EYE_Y + 0.005, EYE_Y + 0.04)),
    ],
)
def test_expression_channel_changes_its_region(avatar: DemoAvatar, channel: str,
                                               region: tuple[float, float, float, float]) -> None:
    diff = np.abs(rgb(avatar, params(**{channel: 1.0})) - rgb(avatar, FaceParams.neutral())).sum(axis=2)
    rows, cols = box(avatar, *region)
    inside = diff[rows, cols].sum()
    assert diff.max() > 60, f"{channel} barely changes the picture"
    assert inside > 0.8 * diff.sum(), f"{channel} changes pixels outside its region"


def test_frown_lowers_the_brows_and_raise_lifts_them(avatar: DemoAvatar) -> None:
    cols = box(avatar, 0.015, 0.045, 0, 0)[1]
    rows = box(avatar, 0, 0, EYE_Y + 0.005, EYE_Y + 0.04)[0]

    def brow_y(p: FaceParams) -> float:
        dark = rgb(avatar, p)[rows, cols].mean(axis=2) < 70
        return float(_centroid(dark)[1])

    neutral = brow_y(FaceParams.neutral())
    assert brow_y(params(brow_raise=1.0)) < neutral - 0.8  # image y grows downwards
    assert brow_y(params(frown=1.0)) > neutral + 0.5


def test_head_rotation_turns_the_whole_face(avatar: DemoAvatar) -> None:
    base = _centroid(iris_mask(rgb(avatar, FaceParams.neutral())))
    turned = _centroid(iris_mask(rgb(avatar, params(head=[0, 0.4, 0]))))
    nodded = _centroid(iris_mask(rgb(avatar, params(head=[0.3, 0, 0]))))
    assert turned[0] - base[0] > 5  # yaw towards the head's left moves the face to the image's right
    assert nodded[1] - base[1] > 3  # pitch forward moves the eyes down


def test_back_face_culling_does_not_change_the_picture(avatar: DemoAvatar) -> None:
    full = DemoAvatar(SIZE, SIZE, renderer="cpu", device="cpu", background=BG, cull_backfaces=False)
    for p in (FaceParams.neutral(), params(head=[0.1, 0.6, 0.0], jaw=[0.2, 0, 0])):
        culled = avatar.gaussians(p)
        assert len(culled) < 0.8 * len(avatar.model)
        diff = np.abs(rgb(avatar, p) - rgb(full, p))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) < 20  # only the silhouette softens a little


def test_unavailable_renderer_or_device_is_a_clear_user_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="gsplat.*needs avatar.device = 'cuda'"):
        DemoAvatar(64, 64, renderer="gsplat", device="auto")
    with pytest.raises(UserError, match="no CUDA device"):
        DemoAvatar(64, 64, renderer="auto", device="cuda")
    with pytest.raises(UserError, match="not one of"):
        DemoAvatar(64, 64, renderer="opengl", device="cpu")
    assert DemoAvatar(64, 64).renderer.name == "tiles"  # auto without CUDA: the compiled CPU renderer


@pytest.mark.gpu
def test_gsplat_is_chosen_on_cuda_and_agrees_with_the_cpu_renderer() -> None:
    from drivers.avatar.splat.gsplat_backend import gsplat_available

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if not gsplat_available():
        pytest.skip("gsplat is not installed")
    gpu = DemoAvatar(256, 256, renderer="auto", device="auto")
    assert (gpu.renderer.name, gpu.device) == ("gsplat", "cuda")
    cpu = DemoAvatar(256, 256, renderer="cpu", device="cpu")
    for p in (FaceParams.neutral(), params(jaw=[0.25, 0, 0], head=[0.1, 0.4, 0], smile=0.6, eyelids=[0.5, 0.5])):
        a, b = gpu.render(p).rgb.astype(np.float64), cpu.render(p).rgb.astype(np.float64)
        psnr = 10 * np.log10(255.0**2 / max(float(np.mean((a - b) ** 2)), 1e-10))
        assert psnr > 40, f"gsplat and the CPU renderer differ: PSNR {psnr:.1f} dB"
