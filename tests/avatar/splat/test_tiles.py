"""The compiled tile rasteriser against the torch reference rasteriser (which matches gsplat), on random scenes
and on the demo head, plus what a renderer must do at the edges: empty scenes, one Gaussian, Gaussians behind
the camera, off-screen, larger than the image, image sizes that are not whole tiles, background, alpha,
determinism, and how the renderer is chosen."""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from bridge.core.errors import UserError
from bridge.core.face_params import FaceParams
from drivers.avatar.demo.avatar import DemoAvatar
from drivers.avatar.splat.cameras import intrinsics, look_at
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings
from drivers.avatar.splat.reference import CpuSplatRenderer
from drivers.avatar.splat.select import select_renderer
from drivers.avatar.splat.tiles import TileSplatRenderer

BG = torch.tensor([0.1, 0.2, 0.3])


@pytest.fixture(scope="module")
def tiles() -> TileSplatRenderer:
    return TileSplatRenderer()


@pytest.fixture(scope="module")
def reference() -> CpuSplatRenderer:
    return CpuSplatRenderer()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def assert_same_picture(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor],
                        min_psnr: float = 60.0) -> None:
    """Both renderers follow the same rules, so nearly every value agrees to float rounding; a value may differ
    more only where rounding tips a threshold (alpha at 1/255, transmittance at 1e-4), and then in few pixels."""
    for g, w, what in ((got[0], want[0], "rgb"), (got[1], want[1], "alpha")):
        assert g.shape == w.shape and g.dtype == torch.float32, what
        assert psnr(g, w) >= min_psnr, f"{what}: PSNR {psnr(g, w):.1f} dB"
        close = float(((g - w).abs() <= 1e-4).float().mean())
        assert close >= 0.995, f"{what}: only {close:.2%} of values within 1e-4"


def scene(n: int, sh_degree: int | None, seed: int, spread: float = 6.0, scale: tuple[float, float] = (0.02, 0.3),
          opacity: tuple[float, float] = (0.0, 1.0)) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * spread
    quats = torch.randn(n, 4, generator=gen)
    scales = scale[0] + (scale[1] - scale[0]) * torch.rand(n, 3, generator=gen)
    opac = opacity[0] + (opacity[1] - opacity[0]) * torch.rand(n, generator=gen)
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=gen)
    else:
        colors = 0.4 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen)
    return Gaussians(means, quats, scales, opac, colors, sh_degree)


def camera(width: int, height: int, eye: tuple[float, float, float] = (0.3, -0.2, 4.0), fov: float = 50.0,
           near: float = 0.5) -> Camera:
    return Camera(look_at(eye, (0.0, 0.0, 0.0)), intrinsics(width, height, fov), width, height, near=near, far=100.0)


@pytest.mark.parametrize("size", [(32, 24), (47, 33), (16, 16), (100, 61), (17, 130)])
@pytest.mark.parametrize("sh_degree", [None, 0, 1, 3])
def test_random_scenes_match_the_reference(tiles: TileSplatRenderer, reference: CpuSplatRenderer,
                                           size: tuple[int, int], sh_degree: int | None) -> None:
    """Sizes that are whole tiles and not; Gaussians spread wider than the view (partly off-screen, some behind
    the camera and inside the near plane); every SH degree."""
    w, h = size
    g = scene(300, sh_degree, seed=w * 7 + h + (sh_degree or 0))
    cam = camera(w, h)
    got, want = tiles.render(g, cam, BG), reference.render(g, cam, BG)
    assert 0.2 < float((want[1] > 0.5).float().mean()) < 0.98  # the scene covers part of the frame
    assert_same_picture(got, want)


def test_off_centre_principal_point_and_non_square_pixels(tiles: TileSplatRenderer,
                                                          reference: CpuSplatRenderer) -> None:
    g = scene(200, 3, seed=11)
    K = torch.tensor([[70.0, 0.0, 20.0], [0.0, 55.0, 41.0], [0.0, 0.0, 1.0]])
    cam = Camera(look_at((0.5, 0.4, 5.0), (0.0, 0.0, 0.0)), K, 72, 50, near=0.3, far=100.0)
    assert_same_picture(tiles.render(g, cam, BG), reference.render(g, cam, BG))


def test_gaussians_larger_than_the_image(tiles: TileSplatRenderer, reference: CpuSplatRenderer) -> None:
    """Huge splats cover every tile (and extend far past the frame); small ones sit on top of them."""
    big = scene(6, None, seed=3, spread=2.0, scale=(1.5, 4.0), opacity=(0.2, 0.6))
    small = scene(80, None, seed=4, spread=2.0, scale=(0.01, 0.1))
    g = Gaussians(*(torch.cat([getattr(big, k), getattr(small, k)]) for k in ("means", "quats", "scales",
                                                                              "opacities", "colors")))
    cam = camera(64, 40)
    want = reference.render(g, cam, BG)
    assert float(want[1].min()) > 0.5  # the big ones fill the frame
    assert_same_picture(tiles.render(g, cam, BG), want)


def test_many_layers_stop_at_the_transmittance_floor(tiles: TileSplatRenderer, reference: CpuSplatRenderer) -> None:
    n = 40
    means = torch.zeros(n, 3)
    means[:, 2] = torch.linspace(-1.0, 1.0, n)
    g = Gaussians(means, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1), torch.full((n, 3), 0.6),
                  torch.full((n,), 0.7), torch.rand(n, 3, generator=torch.Generator().manual_seed(1)))
    cam = camera(40, 30, eye=(0.0, 0.0, 4.0))
    got, want = tiles.render(g, cam), reference.render(g, cam)
    assert float(want[1].max()) > 0.999
    assert_same_picture(got, want)


def test_settings_are_honoured(tiles: TileSplatRenderer, reference: CpuSplatRenderer) -> None:
    g = scene(120, None, seed=5, scale=(0.001, 0.05))
    cam = camera(48, 36)
    for s in (RasterSettings(eps2d=2.0), RasterSettings(radius_clip=3.0),
              RasterSettings(min_alpha=0.05, max_alpha=0.9, min_transmittance=0.2)):
        assert_same_picture(tiles.render(g, cam, BG, s), reference.render(g, cam, BG, s))
    _, clipped = tiles.render(g, cam, BG, RasterSettings(radius_clip=1e6))
    assert float(clipped.max()) == 0.0


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_gaussian(tiles: TileSplatRenderer, reference: CpuSplatRenderer, n: int) -> None:
    g = scene(n, None, seed=2, spread=0.5, scale=(0.3, 0.5), opacity=(0.9, 1.0))
    cam = camera(33, 20, eye=(0.0, 0.0, 4.0))
    rgb, alpha = tiles.render(g, cam, BG)
    assert rgb.shape == (20, 33, 3) and alpha.shape == (20, 33)
    assert_same_picture((rgb, alpha), reference.render(g, cam, BG))
    if n == 0:
        assert torch.equal(rgb, BG.expand(20, 33, 3)) and float(alpha.abs().max()) == 0.0
    else:
        assert float(alpha.max()) > 0.8


def test_everything_behind_the_camera_or_outside_near_far(tiles: TileSplatRenderer) -> None:
    g = scene(50, None, seed=6, spread=1.0)
    behind = camera(30, 20, eye=(0.0, 0.0, 4.0))
    behind.viewmat = look_at((0.0, 0.0, 4.0), (0.0, 0.0, 9.0))  # looking away from the scene
    for cam in (behind, camera(30, 20, eye=(0.0, 0.0, 4.0), near=6.0)):
        rgb, alpha = tiles.render(g, cam, BG)
        assert float(alpha.max()) == 0.0 and torch.equal(rgb, BG.expand(20, 30, 3))


def test_background_shows_through_by_one_minus_alpha(tiles: TileSplatRenderer) -> None:
    g = scene(150, None, seed=8)
    cam = camera(40, 30)
    black, alpha = tiles.render(g, cam)
    white, alpha2 = tiles.render(g, cam, torch.ones(3))
    assert torch.equal(alpha, alpha2)
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    torch.testing.assert_close(white - black, (1.0 - alpha)[..., None].expand(30, 40, 3), atol=1e-6, rtol=0)


def test_depth_decides_not_input_order(tiles: TileSplatRenderer) -> None:
    g = scene(150, 2, seed=9)
    perm = torch.randperm(150, generator=torch.Generator().manual_seed(0))
    shuffled = Gaussians(g.means[perm], g.quats[perm], g.scales[perm], g.opacities[perm], g.colors[perm], 2)
    cam = camera(40, 30)
    a, b = tiles.render(g, cam, BG), tiles.render(shuffled, cam, BG)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_deterministic_whatever_the_thread_count(tiles: TileSplatRenderer) -> None:
    import numba

    g = scene(400, 3, seed=10)
    cam = camera(70, 45)
    first = tiles.render(g, cam, BG)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = tiles.render(g, cam, BG)
    finally:
        numba.set_num_threads(before)
    again = tiles.render(g, cam, BG)
    for other in (single, again):
        assert torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])


def test_serial_kernels_give_the_parallel_kernels_picture(tiles: TileSplatRenderer) -> None:
    """A render beside another runs the serial twins of the kernels: the same picture, bit for bit."""
    g = scene(500, 1, seed=13)
    cam = camera(70, 45)
    pooled = tiles._render(g, cam, BG, None, serial=False)
    alone = tiles._render(g, cam, BG, None, serial=True)
    assert torch.equal(pooled[0], alone[0]) and torch.equal(pooled[1], alone[1])


def test_renders_on_several_threads_at_once_match_one_at_a_time() -> None:
    """Sessions render on their own threads; overlapping renders (one on the pool, the others on the serial
    kernels) each give the picture they give alone."""
    scenes = [(scene(300, None, seed=20 + i), camera(48 + 8 * i, 40)) for i in range(4)]
    renderers = [TileSplatRenderer(warm=False) for _ in scenes]
    want = [r.render(g, cam, BG) for r, (g, cam) in zip(renderers, scenes)]
    start = threading.Barrier(len(scenes))
    got: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in scenes]

    def run(i: int) -> None:
        start.wait()
        for _ in range(20):
            got[i].append(renderers[i].render(*scenes[i], BG))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(scenes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, frames in zip(want, got):
        assert len(frames) == 20
        assert all(torch.equal(w[0], f[0]) and torch.equal(w[1], f[1]) for f in frames)


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_depth_order_is_a_stable_sort_of_the_visible_depths(n: int) -> None:
    """The radix sort gives what a stable argsort of the visible Gaussians' depths gives, ties in index order."""
    from drivers.avatar.splat.tile_kernels import depth_order

    rng = np.random.default_rng(n)
    depth = rng.uniform(0.5, 40.0, n)
    depth[: n // 3] = np.round(depth[: n // 3], 1)  # many ties
    depth[n // 3 : n // 2] = rng.uniform(1e-3, 2e-3, n // 2 - n // 3)  # a wide range of exponents
    visible = rng.random(n) > 0.3
    idx = np.flatnonzero(visible)
    np.testing.assert_array_equal(depth_order(visible, depth), idx[np.argsort(depth[idx], kind="stable")])


def test_inputs_in_other_dtypes_and_layouts(tiles: TileSplatRenderer) -> None:
    """float64 and non-contiguous tensors render as their float32 copies do."""
    g = scene(100, 1, seed=12)
    cam = camera(40, 30)
    want = tiles.render(g, cam, BG)
    wide = Gaussians(g.means.double(), g.quats.t().contiguous().t(), g.scales.double(), g.opacities.double(),
                     g.colors.double(), 1)
    got = tiles.render(wide, cam, BG.double())
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("size", [(96, 96), (130, 77), (256, 256)])
def test_demo_head_matches_the_reference(reference: CpuSplatRenderer, size: tuple[int, int]) -> None:
    w, h = size
    av = DemoAvatar(w, h, renderer="tiles", device="cpu", background=(0.2, 0.3, 0.4))
    talking = FaceParams.neutral()
    talking.jaw[0] = 0.25
    talking.head[:] = (0.1, 0.4, 0.05)
    talking.expression[0] = 0.6
    for p in (FaceParams.neutral(), talking):
        g = av.gaussians(p)
        got = av.renderer.render(g, av.camera, av.background, av.settings)
        want = reference.render(g, av.camera, av.background, av.settings)
        assert float((want[1] > 0.5).float().mean()) > 0.2
        assert_same_picture(got, want)


def test_auto_and_cpu_choose_the_tile_rasteriser_on_the_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto means gsplat")
    assert select_renderer("auto", "cpu").name == "tiles"
    assert select_renderer("cpu", "auto").name == "tiles"
    assert select_renderer("tiles", "cpu").name == "tiles"
    assert isinstance(select_renderer("reference", "cpu"), CpuSplatRenderer)
    assert DemoAvatar(32, 32, renderer="reference").renderer.name == "cpu"


def test_without_numba_cpu_falls_back_to_the_reference_and_tiles_is_a_user_error() -> None:
    """A Python where numba cannot be imported (as on platforms without a numba build)."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from drivers.avatar.splat.select import select_renderer\n"
        "print(select_renderer('cpu', 'cpu').name)\n"
        "try:\n"
        "    select_renderer('tiles', 'cpu')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "from bridge.core.config import Config\n"
        "from bridge.commands.doctor import check_numba\n"
        "print(check_numba(Config()).status)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "cpu"  # the torch reference
    assert lines[1].startswith("RendererSetupError") and "pip install numba" in lines[1]
    assert lines[2] == "WARN"  # avatar-bridge doctor says so too
    warnings = [ln for ln in out.stderr.splitlines() if "slower torch CPU renderer" in ln]
    assert len(warnings) == 1, out.stderr


def test_unknown_renderer_is_a_user_error() -> None:
    with pytest.raises(UserError, match="tiles, reference"):
        select_renderer("fast", "cpu")


@pytest.mark.parametrize("n", [1, 2, 7, 16, 256, 1020])
def test_tile_order_visits_every_tile_once_and_spreads_each_slice(n: int) -> None:
    from drivers.avatar.splat.tile_kernels import spread_order

    order = spread_order(n)
    assert sorted(order.tolist()) == list(range(n))
    if n >= 256:  # each half of the loop (one thread's share) takes tiles from the whole image
        first = order[: n // 2]
        assert first.min() < n // 8 and first.max() > n - n // 8


def test_extreme_values_stay_inside_the_image(tiles: TileSplatRenderer, reference: CpuSplatRenderer) -> None:
    """Tiny and enormous scales, zero quaternions, opacity exactly 0 and 1, a mean on the near plane and NaNs:
    finite pixels in [0, 1], as the reference gives where it is defined."""
    means = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.1, 0.3], [0.0, 0.0, 3.5], [0.5, -0.3, 0.0], [0.1, 0.1, 0.1],
                          [float("nan"), 0.0, 0.0], [0.0, 0.2, 0.0]])
    quats = torch.tensor([[1.0, 0, 0, 0], [0.0, 0, 0, 0], [1.0, 0, 0, 0], [0.3, 0.1, 0.9, 0.2], [1.0, 0, 0, 0],
                          [1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    scales = torch.tensor([[1e-8, 1e-8, 1e-8], [1e6, 1e6, 1e-6], [0.3, 0.3, 0.3], [1e3, 1e-3, 1e3],
                           [0.2, 0.2, 0.2], [0.2, 0.2, 0.2], [float("nan"), 0.1, 0.1]])
    opac = torch.tensor([1.0, 0.4, 1.0, 0.7, 0.0, 1.0, 1.0])
    colors = torch.rand(7, 3, generator=torch.Generator().manual_seed(2))
    g = Gaussians(means, quats, scales, opac, colors)
    cam = camera(37, 29, eye=(0.0, 0.0, 4.0))
    rgb, alpha = tiles.render(g, cam, BG)
    assert bool(torch.isfinite(rgb).all()) and bool(torch.isfinite(alpha).all())
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    finite = torch.isfinite(means).all(1) & torch.isfinite(scales).all(1)
    sane = Gaussians(*(getattr(g, k)[finite] for k in ("means", "quats", "scales", "opacities", "colors")))
    assert_same_picture((rgb, alpha), reference.render(sane, cam, BG))


def test_training_gets_a_differentiable_renderer_and_tiles_refuse_gradients(tiles: TileSplatRenderer) -> None:
    assert isinstance(select_renderer("auto", "cpu", differentiable=True), CpuSplatRenderer)
    assert isinstance(select_renderer("cpu", "cpu", differentiable=True), CpuSplatRenderer)
    with pytest.raises(UserError, match="no gradients"):
        select_renderer("tiles", "cpu", differentiable=True)
    g = scene(10, None, seed=1)
    g.means.requires_grad_(True)
    with pytest.raises(ValueError, match="no gradients"):
        tiles.render(g, camera(16, 16))
    with torch.no_grad():
        tiles.render(g, camera(16, 16))  # inference on a trainable model's tensors is fine
