"""A small z-buffer triangle rasteriser in torch: which triangle covers each pixel, and where in it.

It makes the ground-truth test videos and looks landmarks up on the FLAME surface, so it needs no compiled
renderer. Pixel centres are at integer coordinates (OpenCV's convention, the one the tracker's K uses).
Triangles are grouped by the size of their bounding box, and every candidate pixel of a group is tested at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_EDGE = 1e-5  # pixels exactly on a shared edge belong to both triangles (no cracks from rounding)
_BUCKETS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class Fragments:
    face: torch.Tensor  # (H,W) int64 triangle id, -1 where empty
    bary: torch.Tensor  # (H,W,3) perspective-correct barycentrics (0 where empty)
    depth: torch.Tensor  # (H,W) camera depth, inf where empty


def rasterise(pixels: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, height: int, width: int
              ) -> Fragments:
    """pixels (V,2) projected vertices, depth (V,) camera z (> 0 is in front), faces (T,3) → fragments."""
    dev = pixels.device
    tri = pixels[faces].float()  # (T,3,2)
    z = depth[faces].float()  # (T,3)
    lo = tri.min(1).values.ceil()
    hi = tri.max(1).values.floor()
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    keep = ((z > 1e-6).all(1) & (area.abs() > 1e-12) & (hi[:, 0] >= 0) & (hi[:, 1] >= 0)
            & (lo[:, 0] <= width - 1) & (lo[:, 1] <= height - 1) & (hi >= lo).all(1))
    lo = lo.clamp_min(0)
    hi = torch.minimum(hi, torch.tensor([width - 1.0, height - 1.0], dtype=hi.dtype, device=dev))
    extent = (hi - lo).max(1).values + 1
    all_pix, all_face, all_bary, all_z = [], [], [], []
    prev = 0
    for b in _BUCKETS:
        sel = torch.nonzero(keep & (extent > prev) & (extent <= b)).reshape(-1)
        prev = b
        if sel.numel() == 0:
            continue
        for chunk in sel.split(max(1, 2_000_000 // (b * b))):
            off = torch.arange(b, device=dev, dtype=torch.float32)
            px = lo[chunk, 0, None, None] + off[None, None, :]  # (n,1,b)
            py = lo[chunk, 1, None, None] + off[None, :, None]  # (n,b,1)
            px, py = torch.broadcast_tensors(px, py)
            t = tri[chunk]
            x0, y0 = t[:, 0, 0, None, None], t[:, 0, 1, None, None]
            x1, y1 = t[:, 1, 0, None, None], t[:, 1, 1, None, None]
            x2, y2 = t[:, 2, 0, None, None], t[:, 2, 1, None, None]
            a = area[chunk, None, None]
            w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / a
            w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / a
            w2 = 1 - w0 - w1
            inside = ((w0 >= -_EDGE) & (w1 >= -_EDGE) & (w2 >= -_EDGE) & (px <= hi[chunk, 0, None, None])
                      & (py <= hi[chunk, 1, None, None]))
            n, i, j = torch.nonzero(inside, as_tuple=True)
            if n.numel() == 0:
                continue
            ws = torch.stack([w0[n, i, j], w1[n, i, j], w2[n, i, j]], dim=1)
            zt = z[chunk[n]]
            inv = ws / zt  # perspective-correct: interpolate 1/z
            zz = 1.0 / inv.sum(1)
            all_bary.append(inv * zz[:, None])
            all_z.append(zz)
            all_pix.append((py[n, i, j] * width + px[n, i, j]).long())
            all_face.append(chunk[n])
    face = torch.full((height * width,), -1, dtype=torch.long, device=dev)
    bary = torch.zeros(height * width, 3, dtype=torch.float32, device=dev)
    zbuf = torch.full((height * width,), float("inf"), dtype=torch.float32, device=dev)
    if all_pix:
        pix, fid, bar, zs = (torch.cat(all_pix), torch.cat(all_face), torch.cat(all_bary), torch.cat(all_z))
        zbuf.scatter_reduce_(0, pix, zs, reduce="amin")
        win = zs <= zbuf[pix]
        # Ties (shared edges at equal depth) go to the highest triangle id, deterministically.
        face.scatter_reduce_(0, pix[win], fid[win], reduce="amax")
        chosen = win & (face[pix] == fid)
        bary[pix[chosen]] = bar[chosen].float()
    return Fragments(face.reshape(height, width), bary.reshape(height, width, 3),
                     zbuf.float().reshape(height, width))
