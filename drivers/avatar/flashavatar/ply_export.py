"""Posed Gaussians → a standard 3D Gaussian Splatting `.ply` (the layout of the original 3DGS code), so a frame
of the avatar opens in outside splat viewers.

Stored domains follow that layout: positions, zero normals, SH DC and rest coefficients (rest channel-major:
all 15 of red, then green, then blue), opacity as a logit, log scales and the (w, x, y, z) quaternion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drivers.avatar.splat.gaussians import Gaussians


def ply_bytes(g: Gaussians) -> bytes:
    """Binary little-endian PLY of the Gaussians."""
    means = g.means.detach().float().cpu().numpy()
    n = means.shape[0]
    colors = g.colors.detach().float().cpu()
    if colors.dim() == 2:  # plain RGB: store as the DC term that evaluates to it
        colors = ((colors - 0.5) / 0.28209479177387814)[:, None, :]
    dc = colors[:, 0, :].numpy()
    rest = colors[:, 1:, :].transpose(1, 2).reshape(n, -1).numpy()
    op = g.opacities.detach().float().cpu().clamp(1e-6, 1 - 1e-6)
    logit = torch.log(op / (1 - op)).numpy().reshape(n, 1)
    scales = torch.log(g.scales.detach().float().cpu().clamp_min(1e-12)).numpy()
    quats = torch.nn.functional.normalize(g.quats.detach().float().cpu(), dim=-1).numpy()
    cols = [means, np.zeros((n, 3), np.float32), dc, rest, logit, scales, quats]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(rest.shape[1])]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.concatenate(cols, axis=1).astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\nelement vertex {}\n{}end_header\n".format(
        n, "".join(f"property float {k}\n" for k in names)
    )
    return header.encode("ascii") + data.tobytes()


def write_ply(g: Gaussians, path: Path | str) -> Path:
    path = Path(path)
    path.write_bytes(ply_bytes(g))
    return path


def read_ply(path: Path | str) -> dict[str, np.ndarray]:
    """Read back a PLY written by `write_ply` (float properties only): name → (N,) array."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    if header[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise ValueError(f"{path} is not a binary little-endian PLY")
    n = next(int(h.split()[2]) for h in header if h.startswith("element vertex"))
    names = [h.split()[2] for h in header if h.startswith("property float")]
    arr = np.frombuffer(raw[end:], dtype="<f4", count=n * len(names)).reshape(n, len(names))
    return {k: arr[:, i] for i, k in enumerate(names)}
