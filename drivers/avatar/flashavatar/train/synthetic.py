"""A training set with a known answer: a "teacher" FlashAvatar rendered over a sequence of varied expressions
and head poses, written exactly as a real one is laid out (frames, alpha, parsing masks, metrical-tracker
`.frame` files), so training on it exercises the whole path and a student can be scored against the teacher.

The teacher is a checkpoint in the real format on the given FLAME files: a deformation MLP (an existing
checkpoint's or a seeded fresh one, rescaled so it moves Gaussians by millimetres with the expression), a
procedural skin-like texture over the UV layout (lips, eyes, hairline, a pattern, per-Gaussian detail) with
some view-dependent colour, near-opaque Gaussians a little smaller than their spacing. It is rendered by the
inference model and renderer the avatar driver uses.

Per frame the "photo" is the teacher's colour where it covers the pixel (its matting foreground) over a plain
background, the alpha is its coverage, the neck-and-head mask is every pixel it covers and the mouth mask is
where the mouth's Gaussians show. Upstream's compositing of that photo with that alpha onto green gives back
the teacher's render on green, up to JPEG.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bridge.core.rotations_torch import axis_angle_to_matrix, matrix_to_rotation_6d
from drivers.avatar.flame.model import head_motion_batch
from drivers.avatar.flashavatar.checkpoint import load_checkpoint
from drivers.avatar.flashavatar.create.frame_files import frame_dict
from drivers.avatar.flashavatar.model import FlashAvatarModel, FlashFrame, SubjectFiles
from drivers.avatar.flashavatar.train.init import mean_sq_knn_distance
from drivers.avatar.flashavatar.train.model import HIDDEN_DIM, HIDDEN_LAYERS, TrainableAvatar
from drivers.avatar.flashavatar.train.outputs import SubjectFilePaths, save_checkpoint
from drivers.avatar.flashavatar.train.trainer import make_optimizers
from drivers.avatar.splat.cameras import FAR, NEAR, default_camera
from drivers.avatar.splat.gaussians import Camera, Gaussians, RasterSettings
from drivers.avatar.splat.images import to_uint8
from drivers.avatar.splat.sh import rgb_to_sh0

TRACKER_SIZE = 512  # metrical-tracker's crops: K is stored for 512 x 512
FPS = 25.0
# The teacher's MLP: an untrained network's layers scaled by the ReLU gain sqrt(6) (PyTorch's default init
# shrinks the signal layer by layer, leaving an almost constant output), then its outputs scaled so offsets
# are a few millimetres and change with the expression by about 2 mm, rotations by a few degrees, and the
# log-scale coefficient (to which sizes are very sensitive) by a few per cent.
RELU_GAIN = 6.0**0.5
OUTPUT_SCALE = (0.025,) * 3 + (0.25,) * 4 + (0.03,) * 3
COLOUR_JITTER = 0.06  # per-Gaussian colour noise: detail at the texel scale
SIZE_FACTOR = 0.7  # Gaussian sigma relative to the texel spacing
PHOTO_BACKGROUND = (0.35, 0.38, 0.42)
FACE_HZ = (0.5, 2.5)  # expression, jaw, eyes, blinks: the pace of talking
HEAD_HZ = (0.2, 1.0)  # head turns and moves
EYEBALL_FIRST_VERTEX = 3931  # FLAME's eyeball vertices come last


@dataclass
class SyntheticResult:
    dataset: Path
    tracking: Path
    teacher: Path
    frames: int


def _texel_uv(subject: FlashAvatarModel) -> np.ndarray:
    """(N,2) UV coordinates of the Gaussians' texels (texel centres, v up)."""
    s = subject.raster.size
    flat = np.nonzero(subject.raster.uv_mask)[0][subject.head_mask]
    r, c = flat // s, flat % s
    return np.stack([(c + 0.5) / s, 1.0 - (r + 0.5) / s], axis=1)


def teacher_colours(subject: FlashAvatarModel) -> torch.Tensor:
    """(N,3) colours in [0,1]: skin with a mid-frequency pattern, red lips/mouth, dark eyes and hairline."""
    uv = _texel_uv(subject)
    u, v = uv[:, 0], uv[:, 1]
    p = subject.canonical.detach().cpu().numpy()
    span = np.ptp(p, axis=0) + 1e-9
    q = (p - p.min(axis=0)) / span  # canonical position in [0,1]^3
    skin = np.array([0.80, 0.60, 0.50])
    pattern = 0.10 * np.sin(2 * np.pi * 7 * u) * np.sin(2 * np.pi * 7 * v) + 0.05 * np.sign(
        np.sin(2 * np.pi * 19 * u) * np.sin(2 * np.pi * 19 * v))
    col = skin[None] * (0.85 + 0.3 * q[:, 1:2]) + pattern[:, None]
    hair = q[:, 1] > 0.8
    col[hair] = np.array([0.28, 0.18, 0.12]) + 0.5 * pattern[hair, None]
    mouth = (v > 0.93) & (u > 0.38) & (u < 0.62)
    col[mouth] = [0.55, 0.12, 0.15]
    faces = subject.tex_faces.detach().cpu().numpy()
    eyes = (faces >= EYEBALL_FIRST_VERTEX).all(axis=1)
    col[eyes] = np.where((np.sin(40 * u[eyes]) > 0)[:, None], [0.92, 0.92, 0.9], [0.15, 0.1, 0.08])
    return torch.as_tensor(np.clip(col, 0.02, 0.98), dtype=torch.float32)


def mouth_gaussians(subject: FlashAvatarModel) -> torch.Tensor:
    """(N,) bool: Gaussians of the mouth cavity's UV island (where upstream's mouth mask looks)."""
    uv = _texel_uv(subject)
    return torch.as_tensor((uv[:, 1] > 0.93) & (uv[:, 0] > 0.38) & (uv[:, 0] < 0.62))


def make_teacher(files: SubjectFilePaths, shape: np.ndarray, out: Path, mlp_from: Path | None = None,
                 seed: int = 0, hidden_dim: int = HIDDEN_DIM, hidden_layers: int = HIDDEN_LAYERS) -> Path:
    """Write the teacher checkpoint (upstream's format) to `out` and return its path. Its MLP is `mlp_from`'s
    (which sets the size) or a fresh one of the given size, outputs scaled down."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    src = load_checkpoint(mlp_from) if mlp_from is not None else None
    if src is not None:
        hidden_dim, hidden_layers = src.hidden_dim, src.hidden_layers
    subject_files = SubjectFiles.load(files.flame_model, files.flame_masks, files.flame_mesh, files.eyelids_dir)
    model = TrainableAvatar(subject_files, shape, "cpu", hidden_dim, hidden_layers)
    n = model.num_gaussians
    with torch.no_grad():
        if src is not None:
            model.mlp.load_state_dict(src.mlp_state)
        for layer in [*model.mlp.fcs, model.mlp.output_linear]:
            assert isinstance(layer, torch.nn.Linear)
            layer.weight.mul_(RELU_GAIN)
        out_scale = torch.tensor(OUTPUT_SCALE)
        model.mlp.output_linear.weight.mul_(out_scale[:, None])
        model.mlp.output_linear.bias.mul_(out_scale)
        col = teacher_colours(model.subject) + COLOUR_JITTER * torch.randn(n, 3, generator=gen)
        model.features_dc.copy_(rgb_to_sh0(col.clamp(0.02, 0.98))[:, None, :])
        model.features_rest.copy_(0.05 * torch.randn(n, model.features_rest.shape[1], 3, generator=gen))
        d2 = mean_sq_knn_distance(model.subject.canonical)
        log_s = torch.log(torch.sqrt(d2.clamp_min(1e-7)) * SIZE_FACTOR)[:, None]
        model.scaling_base.copy_(log_s + 0.2 * torch.randn(n, 3, generator=gen))
        model.rotation_base.copy_(torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1))
        model.opacity.copy_(torch.logit(0.85 + 0.14 * torch.rand(n, 1, generator=gen)))
        model.active_sh_degree = 3
    mlp_opt, gauss_opt = make_optimizers(model)
    return save_checkpoint(out, model, mlp_opt, gauss_opt, model.subject.canonical, 1)


def _smooth(rng: np.random.Generator, frames: int, dims: int, amplitude: np.ndarray | float,
            band: tuple[float, float], waves: int = 3) -> np.ndarray:
    """(frames, dims) sums of a few sinusoids with frequencies in `band` (Hz at 25 fps) and random phases:
    smooth, varied motion that keeps revisiting its range (so the held-out tail is like the rest)."""
    t = np.arange(frames)[:, None, None] / FPS
    freq = rng.uniform(band[0], band[1], (1, dims, waves))
    phase = rng.uniform(0, 2 * np.pi, (1, dims, waves))
    weight = rng.uniform(0.5, 1.0, (1, dims, waves))
    x = (weight * np.sin(2 * np.pi * freq * t + phase)).sum(-1) / weight.sum(-1)
    return (x * np.asarray(amplitude)).astype(np.float32)


def sequence(frames: int, seed: int = 0, face_hz: tuple[float, float] = FACE_HZ,
             head_hz: tuple[float, float] = HEAD_HZ, expression_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Expression (F,100), jaw/eyes as 6D (F,6)/(F,12), eyelids (F,2), head rotation (F,3) and translation
    (F,3) in metres. The face moves in the `face_hz` band (talking), the head in the slower `head_hz` band."""
    rng = np.random.default_rng(seed)
    amp = expression_scale * np.concatenate([np.full(10, 1.5), np.full(20, 0.8), np.full(70, 0.3)])
    expr = _smooth(rng, frames, 100, amp, face_hz)
    jaw_open = 0.18 * (1 + _smooth(rng, frames, 1, 1.0, face_hz)[:, 0])  # 0 .. 0.36 rad
    jaw_aa = np.stack([jaw_open, *_smooth(rng, frames, 2, 0.04, face_hz).T], axis=1)
    gaze = _smooth(rng, frames, 2, 0.2, face_hz)
    eyes_aa = np.concatenate([gaze[:, 0:1], gaze[:, 1:2], np.zeros((frames, 1))], axis=1).astype(np.float32)
    blink = np.clip(_smooth(rng, frames, 1, 1.0, face_hz)[:, 0] * 2.5 - 1.5, 0.0, 1.0)
    lids = np.stack([blink, blink], axis=1).astype(np.float32)
    head = _smooth(rng, frames, 3, np.array([0.25, 0.5, 0.15]), head_hz)  # pitch, yaw, roll (rad)
    move = _smooth(rng, frames, 3, np.array([0.02, 0.015, 0.03]), head_hz)

    def six(aa: np.ndarray) -> np.ndarray:
        return matrix_to_rotation_6d(axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float32))).numpy()

    return {"expr": expr, "jaw6": six(jaw_aa), "eyes12": np.concatenate([six(eyes_aa), six(eyes_aa)], axis=1),
            "eyelids": lids, "head": head, "translation": move}


def _frame_file(shape: np.ndarray, seq: dict[str, np.ndarray], i: int, view: np.ndarray, K: np.ndarray
                ) -> dict[str, object]:
    """A metrical-tracker checkpoint dict (its `save_checkpoint` layout, float32 NumPy arrays)."""
    return frame_dict(shape, seq["expr"][i], seq["jaw6"][i], seq["eyes12"][i], seq["eyelids"][i], view[:3, :3],
                      view[:3, 3], K, TRACKER_SIZE, i)


def _write_frame(root: Path, tracking: Path, stem: str, photo: np.ndarray, alpha: np.ndarray, head: np.ndarray,
                 mouth: np.ndarray, frame: dict[str, object], index: int) -> None:
    from PIL import Image

    Image.fromarray(photo).save(root / "imgs" / f"{stem}.jpg", quality=95)
    Image.fromarray(alpha).save(root / "alpha" / f"{stem}.jpg", quality=98)
    Image.fromarray(head).save(root / "parsing" / f"{stem}_neckhead.png")
    Image.fromarray(mouth).save(root / "parsing" / f"{stem}_mouth.png")
    torch.save(frame, tracking / f"{index:05d}.frame")


def make_dataset(out: Path, files: SubjectFilePaths, shape: np.ndarray, frames: int = 300, size: int = 512,
                 device: str = "cpu", mlp_from: Path | None = None, seed: int = 0, frame_offset: int = 1,
                 batch: int = 16, hidden_dim: int = HIDDEN_DIM, hidden_layers: int = HIDDEN_LAYERS,
                 face_hz: tuple[float, float] = FACE_HZ, expression_scale: float = 1.0) -> SyntheticResult:
    """Render the teacher over `frames` frames into `out` (upstream's layout; tracking in out/tracking)."""
    if frames < 2:
        raise ValueError("a synthetic dataset needs at least 2 frames")
    out = Path(out)
    for sub in ("imgs", "alpha", "parsing", "tracking/checkpoint", "teacher"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    tracking = out / "tracking" / "checkpoint"
    teacher_path = make_teacher(files, shape, out / "teacher" / "chkpnt_teacher.pth", mlp_from, seed, hidden_dim,
                                hidden_layers)
    dev = torch.device(device)
    teacher = FlashAvatarModel.from_files(teacher_path, files.flame_model, files.flame_masks, files.flame_mesh,
                                          files.eyelids_dir, shape, device=dev)
    from drivers.avatar.splat.select import select_renderer

    renderer = select_renderer("auto", device)
    seq = sequence(frames, seed, face_hz, expression_scale=expression_scale)
    pts = teacher.canonical.detach().cpu().numpy()
    lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
    base = default_camera((lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2), TRACKER_SIZE, TRACKER_SIZE,
                          zoom=0.9)
    K512 = base.K.numpy().astype(np.float64)
    scale = size / TRACKER_SIZE
    K = torch.tensor([[K512[0, 0] * scale, 0, size / 2], [0, K512[1, 1] * scale, size / 2], [0, 0, 1]],
                     dtype=torch.float32, device=dev)
    rots = axis_angle_to_matrix(torch.as_tensor(seq["head"]))
    motion = head_motion_batch(rots, torch.eye(3).expand_as(rots), torch.as_tensor(seq["translation"]),
                               teacher.joints0.cpu())
    views = (base.viewmat[None] @ motion).numpy().astype(np.float64)
    mouth_colours = mouth_gaussians(teacher).to(dev).float()[:, None].expand(-1, 3).contiguous()  # 1: mouth
    black = torch.zeros(3, device=dev)
    settings = RasterSettings(eps2d=0.3)
    photo_bg = torch.tensor(PHOTO_BACKGROUND, device=dev)
    pool = ThreadPoolExecutor(max_workers=4)  # encodes and writes while the next frames render
    jobs: deque[Future[None]] = deque()
    for s in range(0, frames, batch):
        idx = list(range(s, min(s + batch, frames)))

        def col(key: str, idx: list[int] = idx) -> torch.Tensor:
            return torch.as_tensor(seq[key][idx], device=dev)

        with torch.no_grad():
            means, quats, scales = teacher.gaussians_batch(FlashFrame(col("expr"), col("jaw6"), col("eyes12"),
                                                                      col("eyelids")))
            for j, i in enumerate(idx):
                cam = Camera(torch.as_tensor(views[i], dtype=torch.float32, device=dev), K, size, size, NEAR, FAR)
                g = Gaussians(means[j], quats[j], scales[j], teacher.opacities, teacher.sh, teacher.sh_degree)
                premult, alpha = renderer.render(g, cam, black, settings)
                marks = Gaussians(means[j], quats[j], scales[j], teacher.opacities, mouth_colours, None)
                mouth_cover, _ = renderer.render(marks, cam, black, settings)
                a = alpha[..., None]
                fg = torch.where(a > 1.0 / 255.0, (premult / a.clamp_min(1e-6)).clamp(0.0, 1.0), photo_bg)
                photo, alpha8 = to_uint8(fg), to_uint8(alpha)
                head8 = np.where(alpha8 > 0, 255, 0).astype(np.uint8)
                mouth8 = np.where(mouth_cover[..., 0].cpu().numpy() > 0.5, 255, 0).astype(np.uint8)
                frame = _frame_file(np.asarray(shape, np.float32), seq, i, views[i], K512)
                jobs.append(pool.submit(_write_frame, out, tracking, f"{i + frame_offset:05d}", photo, alpha8,
                                        head8, mouth8, frame, i))
        while len(jobs) > 4 * batch:  # at most a few batches behind: memory stays bounded
            jobs.popleft().result()
    for job in jobs:
        job.result()
    pool.shutdown()
    return SyntheticResult(out, tracking, teacher_path, frames)
