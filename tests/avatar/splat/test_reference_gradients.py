"""The torch reference rasteriser is differentiable: its gradients equal numerical derivatives of its own output
(float64 gradcheck on a small scene), differentiating leaves the image untouched, and on CUDA they agree with
gsplat's backward pass (the rasteriser training uses there)."""

from __future__ import annotations

import pytest
import torch

from drivers.avatar.splat.cameras import intrinsics, look_at
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings
from drivers.avatar.splat.reference import CpuSplatRenderer, Projected

W, H = 20, 16


def _scene(dtype: torch.dtype, device: str = "cpu", n: int = 6, sh_degree: int = 1, seed: int = 0
           ) -> tuple[list[torch.Tensor], Camera]:
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor([1.6, 1.2, 1.0])
    quats = torch.randn(n, 4, generator=gen)
    scales = 0.15 + 0.25 * torch.rand(n, 3, generator=gen)
    opac = 0.3 + 0.6 * torch.rand(n, generator=gen)
    colors = 0.4 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen)
    cam = Camera(look_at((0.3, -0.2, 4.0), (0.0, 0.0, 0.0)), intrinsics(W, H, 35.0), W, H, near=0.01, far=100.0)
    cam = Camera(cam.viewmat.to(device, dtype), cam.K.to(device, dtype), W, H, cam.near, cam.far)
    return [t.to(device, dtype).requires_grad_(True) for t in (means, quats, scales, opac, colors)], cam


def _render(params: list[torch.Tensor], cam: Camera, renderer: object, sh_degree: int = 1
            ) -> tuple[torch.Tensor, torch.Tensor]:
    g = Gaussians(*params, sh_degree=sh_degree)
    bg = torch.tensor([0.1, 0.5, 0.2], dtype=params[0].dtype, device=params[0].device)
    return renderer.render(g, cam, bg, RasterSettings(eps2d=0.3))  # type: ignore[attr-defined]


def test_gradients_match_numerical_derivatives() -> None:
    params, cam = _scene(torch.float64)
    renderer = CpuSplatRenderer()

    def image(*p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _render(list(p), cam, renderer)

    _, alpha = image(*params)
    assert 0.05 < float((alpha > 0.05).double().mean()) < 0.95  # the splats cover part of the frame
    # fast mode checks random projections u^T J v, a few passes instead of the whole Jacobian
    assert torch.autograd.gradcheck(image, tuple(params), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_autograd_leaves_the_image_unchanged() -> None:
    params, cam = _scene(torch.float32)
    renderer = CpuSplatRenderer()
    rgb, alpha = _render(params, cam, renderer)
    with torch.no_grad():
        rgb0, alpha0 = _render(params, cam, renderer)
    assert torch.equal(rgb, rgb0) and torch.equal(alpha, alpha0)
    (rgb.sum() + alpha.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.gpu
def test_gradients_agree_with_gsplat() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from drivers.avatar.splat.gsplat_backend import GsplatRenderer, gsplat_available

    if not gsplat_available():
        pytest.skip("gsplat is not importable")
    weights = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(7)).cuda()
    grads = []
    for renderer in (CpuSplatRenderer(), GsplatRenderer()):
        params, cam = _scene(torch.float32, "cuda", n=40, sh_degree=3, seed=2)
        rgb, alpha = _render(params, cam, renderer, sh_degree=3)
        ((rgb * weights).sum() + alpha.sum()).backward()
        grads.append([p.grad.detach().clone() for p in params])
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), *grads):
        rel = float((a - b).norm() / b.norm().clamp_min(1e-12))
        assert rel < 2e-2, f"{name}: reference vs gsplat gradient differ by {rel:.3g} (relative)"




def test_no_gradient_flows_through_the_span_of_a_row_its_splat_just_reaches() -> None:
    """A row that a splat's threshold ellipse just touches has a zero discriminant, and its span of pixels is
    one pixel. The span's ends are pixel indices and take no gradient; through the square root they took 0/0,
    a NaN that spread to every Gaussian and ended a training run after thousands of iterations."""
    s = RasterSettings()
    mean2d = torch.tensor([[4.5, 4.5]], requires_grad=True)  # on pixel (4, 4)'s centre
    conic = torch.tensor([[1.0, 0.0, 1.0]], requires_grad=True)
    opacity = torch.tensor([s.min_alpha], requires_grad=True)  # the ellipse shrinks to the centre: disc = 0
    proj = Projected(torch.zeros(1, dtype=torch.long), mean2d, conic, torch.ones(1),
                     torch.tensor([[2, 2]]), opacity)
    pix, _, alpha = CpuSplatRenderer._pairs(proj, 9, 9, s)
    assert pix.tolist() == [4 * 9 + 4]  # the one pixel the row's span holds
    alpha.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (mean2d, conic, opacity))
