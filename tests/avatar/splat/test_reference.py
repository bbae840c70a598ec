"""The CPU splatting renderer against a straightforward per-pixel, per-Gaussian reference written from the
3DGS formulas (in float64 numpy), plus the compositing properties every splatting renderer must have."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drivers.avatar.splat.cameras import intrinsics, look_at
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings
from drivers.avatar.splat.reference import CpuSplatRenderer

W, H = 32, 24


def _ref_sh(deg: int, coeffs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Real SH up to degree 3 written out term by term (Sloan's table, as 3DGS uses)."""
    x, y, z = d / np.linalg.norm(d)
    basis = [0.28209479177387814]
    if deg >= 1:
        c1 = 0.4886025119029199
        basis += [-c1 * y, c1 * z, -c1 * x]
    if deg >= 2:
        basis += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (2 * z * z - x * x - y * y),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (x * x - y * y),
        ]
    if deg >= 3:
        basis += [
            -0.5900435899266435 * y * (3 * x * x - y * y),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (4 * z * z - x * x - y * y),
            0.3731763325901154 * z * (2 * z * z - 3 * x * x - 3 * y * y),
            -0.4570457994644658 * x * (4 * z * z - x * x - y * y),
            1.445305721320277 * z * (x * x - y * y),
            -0.5900435899266435 * x * (x * x - 3 * y * y),
        ]
    b = np.array(basis)
    return b @ coeffs[: len(b)]


def reference_render(g: Gaussians, cam: Camera, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow loop: project each Gaussian, sort by depth, composite every pixel front to back."""
    V = cam.viewmat.double().numpy()
    K = cam.K.double().numpy()
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    campos = -V[:3, :3].T @ V[:3, 3]
    splats = []
    for i in range(len(g)):
        m = g.means[i].double().numpy()
        pc = V[:3, :3] @ m + V[:3, 3]
        if not cam.near <= pc[2] <= cam.far:
            continue
        op = float(g.opacities[i])
        if op < 1 / 255:
            continue
        w, x, y, z = g.quats[i].double().numpy() / np.linalg.norm(g.quats[i].double().numpy())
        Rq = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        S = np.diag(g.scales[i].double().numpy())
        cov_c = V[:3, :3] @ (Rq @ S @ S.T @ Rq.T) @ V[:3, :3].T
        # Jacobian evaluated at the mean clamped to 1.3x the field of view (gsplat's guard band).
        lim_x = np.array([-(cx / fx + 0.15 * cam.width / fx), (cam.width - cx) / fx + 0.15 * cam.width / fx])
        lim_y = np.array([-(cy / fy + 0.15 * cam.height / fy), (cam.height - cy) / fy + 0.15 * cam.height / fy])
        tx = pc[2] * np.clip(pc[0] / pc[2], *lim_x)
        ty = pc[2] * np.clip(pc[1] / pc[2], *lim_y)
        J = np.array([[fx / pc[2], 0, -fx * tx / pc[2] ** 2], [0, fy / pc[2], -fy * ty / pc[2] ** 2]])
        cov2 = J @ cov_c @ J.T + 0.3 * np.eye(2)
        if np.linalg.det(cov2) <= 0:
            continue
        mean2 = np.array([fx * pc[0] / pc[2] + cx, fy * pc[1] / pc[2] + cy])
        if g.sh_degree is None:
            col = g.colors[i].double().numpy()
        else:
            col = np.maximum(_ref_sh(g.sh_degree, g.colors[i].double().numpy(), m - campos) + 0.5, 0.0)
        splats.append((pc[2], mean2, np.linalg.inv(cov2), op, col))
    splats.sort(key=lambda s: s[0])
    rgb = np.zeros((cam.height, cam.width, 3))
    alpha = np.zeros((cam.height, cam.width))
    for py in range(cam.height):
        for px in range(cam.width):
            T = 1.0
            c = np.zeros(3)
            p = np.array([px + 0.5, py + 0.5])
            for _, mean2, conic, op, col in splats:
                d = p - mean2
                a = min(0.999, op * math.exp(-0.5 * d @ conic @ d))
                if a < 1 / 255:
                    continue
                if T * (1 - a) <= 1e-4:
                    break
                c += a * T * col
                T *= 1 - a
            rgb[py, px] = c + T * bg
            alpha[py, px] = 1 - T
    return rgb, alpha


def _camera(eye: tuple[float, float, float] = (0.3, -0.2, 4.0)) -> Camera:
    return Camera(look_at(eye, (0.0, 0.0, 0.0)), intrinsics(W, H, 40.0), W, H, near=0.01, far=100.0)


def _scene(n: int, sh_degree: int | None, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor([2.4, 1.8, 1.5])
    quats = torch.randn(n, 4, generator=gen)
    scales = 0.05 + 0.3 * torch.rand(n, 3, generator=gen)
    opac = 0.2 + 0.8 * torch.rand(n, generator=gen)
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=gen)
    else:
        colors = 0.4 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen)
    return Gaussians(means, quats, scales, opac, colors, sh_degree)


@pytest.mark.parametrize("sh_degree", [None, 0, 1, 3])
def test_matches_independent_reference(sh_degree: int | None) -> None:
    g = _scene(7, sh_degree, seed=3 + (sh_degree or 0))
    cam = _camera()
    bg = np.array([0.1, 0.2, 0.3])
    rgb, alpha = CpuSplatRenderer().render(g, cam, torch.tensor(bg, dtype=torch.float32))
    ref_rgb, ref_alpha = reference_render(g, cam, bg)
    assert ref_alpha.max() > 0.5 and ref_alpha.min() < 0.1  # the scene covers part of the frame
    np.testing.assert_allclose(rgb.numpy(), ref_rgb, atol=2e-4)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=2e-4)


def test_many_overlapping_layers_hit_transmittance_cutoff() -> None:
    """Enough opaque layers that the 1e-4 stop rule decides the result."""
    n = 12
    means = torch.zeros(n, 3)
    means[:, 2] = torch.linspace(-1.0, 1.0, n)
    g = Gaussians(
        means,
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        torch.full((n, 3), 0.6),
        torch.full((n,), 0.7),
        torch.rand(n, 3, generator=torch.Generator().manual_seed(1)),
    )
    cam = _camera((0.0, 0.0, 4.0))
    rgb, alpha = CpuSplatRenderer().render(g, cam)
    ref_rgb, ref_alpha = reference_render(g, cam, np.zeros(3))
    np.testing.assert_allclose(rgb.numpy(), ref_rgb, atol=2e-4)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=2e-4)


def _one(mean: tuple[float, float, float], color: tuple[float, float, float], opacity: float, scale: float) -> Gaussians:
    return Gaussians(
        torch.tensor([mean]),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.full((1, 3), scale),
        torch.tensor([opacity]),
        torch.tensor([color]),
    )


def _cat(*gs: Gaussians) -> Gaussians:
    return Gaussians(*(torch.cat([getattr(g, k) for g in gs]) for k in ("means", "quats", "scales", "opacities", "colors")))


def test_empty_scene_is_background() -> None:
    g = Gaussians(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3))
    rgb, alpha = CpuSplatRenderer().render(g, _camera(), torch.tensor([0.2, 0.4, 0.6]))
    assert rgb.shape == (H, W, 3) and alpha.shape == (H, W)
    assert torch.allclose(rgb, torch.tensor([0.2, 0.4, 0.6]).expand(H, W, 3))
    assert float(alpha.abs().max()) == 0.0


def test_opaque_front_gaussian_hides_back_one() -> None:
    cam = _camera((0.0, 0.0, 4.0))
    front = _one((0.0, 0.0, 0.5), (1.0, 0.0, 0.0), 1.0, 0.6)
    back = _one((0.0, 0.0, -0.5), (0.0, 0.0, 1.0), 1.0, 0.6)
    # Order in the input must not matter: depth decides.
    rgb, alpha = CpuSplatRenderer().render(_cat(back, front), cam)
    centre = rgb[H // 2, W // 2]
    assert float(centre[0]) > 0.99 and float(centre[2]) < 1e-3
    assert float(alpha[H // 2, W // 2]) > 0.99


def test_sh_degree_zero_colour() -> None:
    cam = _camera((0.0, 0.0, 4.0))
    target = torch.tensor([0.8, 0.3, 0.1])
    g = _one((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1.0, 0.8)
    g.colors = ((target - 0.5) / 0.28209479177387814).reshape(1, 1, 3)
    g.sh_degree = 0
    rgb, alpha = CpuSplatRenderer().render(g, cam)
    # One splat over a black background: colour = alpha * SH DC colour at every covered pixel.
    covered = alpha > 0.1
    assert int(covered.sum()) > 20
    assert torch.allclose(rgb[covered] / alpha[covered][:, None], target.expand(int(covered.sum()), 3), atol=1e-5)


def test_camera_facing_away_sees_nothing() -> None:
    g = _scene(20, None)
    cam = Camera(look_at((0.0, 0.0, 4.0), (0.0, 0.0, 8.0)), intrinsics(W, H, 40.0), W, H)
    rgb, alpha = CpuSplatRenderer().render(g, cam, torch.tensor([0.5, 0.5, 0.5]))
    assert float(alpha.max()) == 0.0
    assert torch.allclose(rgb, torch.full((H, W, 3), 0.5))


def test_near_plane_culls() -> None:
    g = _one((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0, 0.3)
    cam = _camera((0.0, 0.0, 4.0))
    cam.near = 4.5
    _, alpha = CpuSplatRenderer().render(g, cam)
    assert float(alpha.max()) == 0.0


def test_settings_change_result() -> None:
    """The low-pass and radius clip knobs are honoured (a larger eps2d spreads a tiny splat)."""
    g = _one((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0, 0.001)
    cam = _camera((0.0, 0.0, 4.0))
    _, a_default = CpuSplatRenderer().render(g, cam)
    _, a_blur = CpuSplatRenderer().render(g, cam, settings=RasterSettings(eps2d=2.0))
    assert float((a_blur > 0.01).sum()) > float((a_default > 0.01).sum())
    _, a_clip = CpuSplatRenderer().render(g, cam, settings=RasterSettings(radius_clip=5.0))
    assert float(a_clip.max()) == 0.0
