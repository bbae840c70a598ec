"""A 3D Gaussian splatting rasteriser in plain torch: the fallback without CUDA and the reference for gsplat.

It follows gsplat's `rasterization()` (classic mode, unpacked) step by step:

* projection: EWA splatting of the 3D covariance R S S^T R^T through the pinhole Jacobian, with the mean's
  x/z and y/z clamped to 1.3x the field of view for the Jacobian only; eps2d added to the 2D covariance;
  Gaussians culled outside [near, far], with a non-positive 2D determinant, opacity below 1/255, or a
  bounding box off the image;
* opacity-aware bounding box: radius = ceil(min(3.33, sqrt(2 ln(opacity * 255))) * sigma) per axis, which
  contains every pixel whose alpha can reach 1/255, so evaluating only inside it loses nothing;
* pixel centres at (x + 0.5, y + 0.5); alpha = min(0.999, opacity * exp(-0.5 d^T conic d)); alphas below 1/255
  skipped; front-to-back compositing by camera depth that stops before transmittance would fall to 1e-4.

Speed comes from doing everything per (Gaussian, pixel) pair in flat tensors: pairs are generated row by row
inside each Gaussian's ellipse (already in depth order), grouped by pixel with one stable integer sort, and the
per-pixel running transmittance is a segmented cumulative sum of log(1 - alpha); only pairs that contribute
reach the colour sums. No Python loop touches a Gaussian or a pixel.

Every step is a differentiable torch operation (the discrete choices - which pairs exist, depth order, where
compositing stops - carry no gradient, as in gsplat's backward pass), so `loss.backward()` through `render`
gives the gradients training needs on machines without CUDA.
"""

from __future__ import annotations

import time

import torch

from bridge.core.rotations_torch import quat_to_matrix
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings
from drivers.avatar.splat.sh import eval_sh

_EXTEND_MAX = 3.33
_PAD = 0.05  # pixels added to each analytic row span against float rounding


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space covariances (N,3,3) = R S S^T R^T."""
    m = quat_to_matrix(quats) * scales[:, None, :]
    return m @ m.transpose(1, 2)


def work_dtype(gaussians: Gaussians) -> torch.dtype:
    """float32, or float64 when the Gaussians are float64 (exact gradient checks)."""
    return torch.float64 if gaussians.means.dtype == torch.float64 else torch.float32


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t[index] along dim 0; index_select is several times faster than advanced indexing on the CPU."""
    return torch.index_select(t, 0, index)


class Projected:
    """The visible Gaussians after projection, in front-to-back depth order."""

    def __init__(
        self,
        index: torch.Tensor,
        mean2d: torch.Tensor,
        conic: torch.Tensor,
        depth: torch.Tensor,
        radius: torch.Tensor,
        opacity: torch.Tensor,
    ) -> None:
        self.index = index  # (M,) into the input Gaussians
        self.mean2d = mean2d  # (M,2) pixels
        self.conic = conic  # (M,3) inverse 2D covariance (a, b, c)
        self.depth = depth  # (M,) camera z
        self.radius = radius  # (M,2) int, x and y
        self.opacity = opacity  # (M,)


def project(gaussians: Gaussians, camera: Camera, settings: RasterSettings) -> Projected:
    """EWA projection and culling, as gsplat's fully fused projection does it."""
    dt = work_dtype(gaussians)
    means = gaussians.means.to(dt)
    dev = means.device
    viewmat = camera.viewmat.to(dev, dt)
    K = camera.K.to(dev, dt)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mean_c = means @ R.T + t
    z = mean_c[:, 2]
    opac = gaussians.opacities.to(dt).reshape(-1)
    keep = (z >= camera.near) & (z <= camera.far) & (opac >= settings.min_alpha)
    idx = keep.nonzero().squeeze(1)
    mean_c, z, opac = mean_c[idx], z[idx], opac[idx]

    cov = covariances(gaussians.quats.to(dt)[idx], gaussians.scales.to(dt)[idx])
    cov_c = R @ cov @ R.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    w, h = float(camera.width), float(camera.height)
    tan_x, tan_y = 0.5 * w / fx, 0.5 * h / fy
    lim_xp, lim_xn = (w - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (h - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    rz = 1.0 / z
    x, y = mean_c[:, 0], mean_c[:, 1]
    tx = z * torch.minimum(lim_xp, torch.maximum(-lim_xn, x * rz))
    ty = z * torch.minimum(lim_yp, torch.maximum(-lim_yn, y * rz))
    zeros = torch.zeros_like(z)
    J = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(1, 2)
    a = cov2d[:, 0, 0] + settings.eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + settings.eps2d
    det = a * c - b * b
    mean2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    extend = torch.sqrt(2.0 * torch.log(opac / settings.min_alpha)).clamp(max=_EXTEND_MAX)
    rx = torch.ceil(extend * a.clamp_min(0).sqrt())
    ry = torch.ceil(extend * c.clamp_min(0).sqrt())
    ok = det > 0
    ok &= ~((rx <= settings.radius_clip) & (ry <= settings.radius_clip))
    ok &= (mean2d[:, 0] + rx > 0) & (mean2d[:, 0] - rx < w) & (mean2d[:, 1] + ry > 0) & (mean2d[:, 1] - ry < h)

    sel = ok.nonzero().squeeze(1)
    order = torch.argsort(z[sel], stable=True)
    sel = sel[order]
    det_s = det[sel]
    conic = torch.stack([c[sel] / det_s, -b[sel] / det_s, a[sel] / det_s], dim=-1)
    radius = torch.stack([rx[sel], ry[sel]], dim=-1).to(torch.int64)
    return Projected(idx[sel], mean2d[sel], conic, z[sel], radius, opac[sel])


def splat_colors(gaussians: Gaussians, camera: Camera, index: torch.Tensor) -> torch.Tensor:
    """Per-Gaussian RGB for the selected Gaussians: plain colours, or SH along mean - camera centre."""
    dt = work_dtype(gaussians)
    colors = gaussians.colors.to(dt)[index]
    if gaussians.sh_degree is None:
        if colors.dim() != 2 or colors.shape[-1] != 3:
            raise ValueError(f"plain colours must be (N,3) when sh_degree is None, got {tuple(colors.shape)}")
        return colors
    viewmat = camera.viewmat.to(colors.device, dt)
    campos = -(viewmat[:3, :3].T @ viewmat[:3, 3])
    dirs = gaussians.means.to(dt)[index] - campos
    return torch.clamp_min(eval_sh(gaussians.sh_degree, colors, dirs) + 0.5, 0.0)


class CpuSplatRenderer:
    """Vectorised torch rasteriser with gsplat's conventions; runs on any torch device (CPU by design)."""

    name = "cpu"

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.timings: dict[str, float] = {}
        """Milliseconds per stage of the last render: project, pairs, sort, composite."""

    def render(
        self,
        gaussians: Gaussians,
        camera: Camera,
        background: torch.Tensor | None = None,
        settings: RasterSettings | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = settings or RasterSettings()
        dev = gaussians.means.device
        W, H = int(camera.width), int(camera.height)
        t0 = time.perf_counter()
        proj = project(gaussians, camera, s)
        colors = splat_colors(gaussians, camera, proj.index)
        t1 = time.perf_counter()

        pix, gid, alpha = self._pairs(proj, W, H, s)
        t2 = time.perf_counter()

        # Pairs come out Gaussian-major in depth order; a stable sort by pixel keeps depth order inside a pixel.
        # The narrowest integer type that holds the pixel index sorts fastest.
        n_pix = W * H
        if n_pix <= 65536:
            vals, perm = torch.sort((pix - 32768).to(torch.int16), stable=True)
            pix = vals.long() + 32768
        elif n_pix < 2**31:
            vals, perm = torch.sort(pix.to(torch.int32), stable=True)
            pix = vals.long()
        else:
            pix, perm = torch.sort(pix, stable=True)
        gid, alpha = _take(gid, perm), _take(alpha, perm)
        t3 = time.perf_counter()

        rgb, acc = self._composite(pix, gid, alpha, colors, W * H, s)
        t4 = time.perf_counter()

        dt = work_dtype(gaussians)
        bg = torch.zeros(3, device=dev, dtype=dt) if background is None else background.to(dev, dt).reshape(3)
        rgb = rgb + (1.0 - acc)[:, None] * bg
        self.timings = {
            "project": (t1 - t0) * 1e3,
            "pairs": (t2 - t1) * 1e3,
            "sort": (t3 - t2) * 1e3,
            "composite": (t4 - t3) * 1e3,
        }
        return rgb.reshape(H, W, 3), acc.reshape(H, W)

    @staticmethod
    def _pairs(
        proj: Projected, W: int, H: int, s: RasterSettings
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixel index, depth rank, alpha) for every pixel centre in each Gaussian's box with alpha >= 1/255,
        ordered by depth rank, then pixel.

        Each box row is cut down to the span where the Gaussian's ellipse can reach the alpha threshold (solved
        from the conic, padded a little against rounding), so almost every generated pair is real; the alpha test
        then decides as the reference does.
        """
        dev = proj.mean2d.device
        m = proj.mean2d.shape[0]
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        mx, my = proj.mean2d[:, 0], proj.mean2d[:, 1]
        dt = proj.mean2d.dtype
        rx, ry = proj.radius[:, 0].to(dt), proj.radius[:, 1].to(dt)
        # Pixel x whose centre x + 0.5 lies within [mx - rx, mx + rx], clipped to the image.
        x0 = torch.ceil(mx - rx - 0.5).clamp(0, W - 1)
        x1 = torch.floor(mx + rx - 0.5).clamp(-1, W - 1)
        y0 = torch.ceil(my - ry - 0.5).clamp(0, H - 1)
        y1 = torch.floor(my + ry - 0.5).clamp(-1, H - 1)
        bh = (y1 - y0 + 1).clamp_min(0).long()
        bh = torch.where(x1 >= x0, bh, torch.zeros_like(bh))
        n_rows = int(bh.sum())
        if m == 0 or n_rows == 0:
            return empty, empty, torch.zeros(0, device=dev, dtype=dt)
        # One entry per (Gaussian, box row).
        row_g = torch.repeat_interleave(torch.arange(m, device=dev), bh)
        row_start = torch.cumsum(bh, 0) - bh
        row_y = _take(y0, row_g) + (torch.arange(n_rows, device=dev) - _take(row_start, row_g)).to(dt)
        a, b, c = proj.conic[:, 0], proj.conic[:, 1], proj.conic[:, 2]
        ra, rb, rc = _take(a, row_g), _take(b, row_g), _take(c, row_g)
        dy = (_take(my, row_g) - 0.5) - row_y
        # 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= ln(opacity / min_alpha), solved for dx = (mx - 0.5) - px.
        cx = _take(mx, row_g) - 0.5
        # The span's ends are pixel indices: no gradient flows through them (the square root's, at a clamped
        # zero, would be 0/0: a NaN that reaches every Gaussian's gradient).
        with torch.no_grad():
            thresh = _take(torch.log(proj.opacity / s.min_alpha), row_g)
            disc = (rb * dy) ** 2 - ra * (rc * dy * dy - 2.0 * thresh)
            root = torch.sqrt(disc.clamp_min(0.0))
            inv_a = 1.0 / ra.clamp_min(1e-12)
            dx_lo = (-rb * dy - root) * inv_a
            dx_hi = (-rb * dy + root) * inv_a
            lo = torch.maximum(torch.ceil(cx - dx_hi - _PAD), _take(x0, row_g))
            hi = torch.minimum(torch.floor(cx - dx_lo + _PAD), _take(x1, row_g))
            count = torch.where(disc >= 0, (hi - lo + 1).clamp_min(0), torch.zeros_like(hi)).long()
        n_pairs = int(count.sum())
        if n_pairs == 0:
            return empty, empty, torch.zeros(0, device=dev, dtype=dt)
        # Along a row, sigma is a quadratic in k = px - lo: fold the per-row terms once, so each pair only
        # evaluates a k^2 + b k + c.
        d0 = cx - lo
        qa = 0.5 * ra
        qb = -(ra * d0 + rb * dy)
        qc = 0.5 * (ra * d0 * d0 + rc * dy * dy) + rb * d0 * dy
        base = row_y * W + lo
        log_op = _take(torch.log(proj.opacity), row_g)
        # One entry per candidate pair.
        pr = torch.repeat_interleave(torch.arange(n_rows, device=dev), count)
        p_start = torch.cumsum(count, 0) - count
        k = (torch.arange(n_pairs, device=dev) - _take(p_start, pr)).to(dt)
        sigma = (_take(qa, pr) * k + _take(qb, pr)) * k + _take(qc, pr)
        alpha = torch.clamp_max(torch.exp(_take(log_op, pr) - sigma), s.max_alpha)
        # Candidates outside the threshold (the padding) get alpha 0: they then neither occlude nor add colour,
        # exactly as if skipped.
        alpha = torch.where((alpha >= s.min_alpha) & (sigma >= 0), alpha, torch.zeros((), device=dev, dtype=dt))
        pix = (_take(base, pr) + k).long()
        return pix, _take(row_g, pr), alpha

    @staticmethod
    def _composite(
        pix: torch.Tensor,
        gid: torch.Tensor,
        alpha: torch.Tensor,
        colors: torch.Tensor,
        n_pixels: int,
        s: RasterSettings,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Front-to-back compositing of pairs sorted by (pixel, depth): returns rgb (P,3) and alpha (P,)."""
        dev = alpha.device
        n = pix.shape[0]
        if n == 0:
            return (torch.zeros(n_pixels, 3, device=dev, dtype=alpha.dtype),
                    torch.zeros(n_pixels, device=dev, dtype=alpha.dtype))
        # Running log-transmittance per pixel: a global cumulative sum (float64, so long runs stay exact)
        # minus its value at the start of each pixel's segment.
        alpha64 = alpha.double()
        log1m = torch.log1p(-alpha64)
        excl = torch.cumsum(log1m, 0) - log1m
        counts = torch.bincount(pix, minlength=n_pixels)
        seg_start = _take(torch.cumsum(counts, 0) - counts, pix)
        # The differences are small again, so the rest runs in the working precision.
        t_excl = torch.exp((excl - _take(excl, seg_start)).to(alpha.dtype))  # exclusive: product over those in front
        # gsplat stops before a Gaussian that would take transmittance to <= 1e-4, and applies none after.
        applied = (t_excl * (1.0 - alpha) > s.min_transmittance).nonzero().squeeze(1)
        weight = _take(alpha, applied) * _take(t_excl, applied)
        p = _take(pix, applied)
        # index_add accumulates in the same order as bincount (identical sums) and, unlike it, has a gradient.
        acc = weight.new_zeros(n_pixels).index_add(0, p, weight)
        cols = _take(colors, _take(gid, applied))
        rgb = weight.new_zeros(n_pixels, 3).index_add(0, p, weight[:, None] * cols)
        return rgb, acc
