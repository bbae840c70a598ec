"""Ground-truth test videos: the FLAME template wearing a real face photo, turning, talking and looking around.

The face is scikit-image's public-domain `astronaut` photo, projected onto the front of the template so that its
eyes and mouth sit on FLAME's eyes and lips (an affine map fixed by the photo's iris centres and mouth centre).
The head is the stand-in FLAME of `synthetic_flame`, so the jaw opens and the eyeballs turn with the iris
painted on them. Frames are rendered by `raster` with simple Lambert shading on a plain background, and every
frame's truth is kept: camera R, t, K, the FLAME parameters and the 2D projection of every vertex.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from bridge.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from drivers.avatar.flame.model import FlameModel
from drivers.avatar.flashavatar.create.raster import rasterise
from drivers.avatar.flashavatar.create.synthetic_flame import LEFT_EYEBALL, RIGHT_EYEBALL
from drivers.avatar.flashavatar.create.tracking import FLIP

# Where the photo's features are (pixels of skimage.data.astronaut(), measured once with the face mesh model):
# the subject's right and left iris centres and the middle of the mouth.
PHOTO_RIGHT_EYE = (203.0, 100.6)
PHOTO_LEFT_EYE = (246.1, 103.0)
PHOTO_MOUTH = (222.7, 146.2)
BACKGROUND = np.array([70, 90, 110], np.float32)
FPS = 25


@dataclass
class FaceTexture:
    photo: NDArray[np.float32]  # (H,W,3) in 0..255
    coords: NDArray[np.float32]  # (V,2) photo pixel (x, y) of every vertex
    dark: NDArray[np.float32]  # (V,) 1 inside the mouth (shown dark when the jaw opens), else 0


def mouth_interior(template: NDArray[np.float64], faces: NDArray[np.integer], mouth_y: float) -> NDArray[np.bool_]:
    """The template's vertices inside the mouth: near the lips' line and facing away from the camera."""
    v = template
    normals = np.zeros_like(v)
    face_n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    near = (np.abs(v[:, 0]) < 0.03) & (np.abs(v[:, 1] - mouth_y) < 0.01) & (v[:, 2] > 0.03)
    return near & (normals[:, 2] < 0.1) & (np.arange(len(v)) < LEFT_EYEBALL.start)


def astronaut_texture(template: NDArray[np.floating], faces: NDArray[np.integer]) -> FaceTexture:
    """The astronaut photo mapped onto the template's front (needs scikit-image)."""
    from skimage.data import astronaut

    v = np.asarray(template, np.float64)
    eye_l, eye_r = v[LEFT_EYEBALL].mean(0), v[RIGHT_EYEBALL].mean(0)
    nose_y = v[np.argmax(np.where(np.arange(len(v)) < LEFT_EYEBALL.start, v[:, 2], -np.inf)), 1]
    mouth = np.array([0.0, nose_y - 0.035])
    src = np.array([[*eye_r[:2], 1], [*eye_l[:2], 1], [*mouth, 1]])
    dst = np.array([PHOTO_RIGHT_EYE, PHOTO_LEFT_EYE, PHOTO_MOUTH])
    affine = np.linalg.solve(src, dst)  # (3,2): [x y 1] @ affine = photo (x, y)
    coords = np.c_[v[:, :2], np.ones(len(v))] @ affine
    dark = mouth_interior(v, np.asarray(faces), float(mouth[1])).astype(np.float32)
    return FaceTexture(astronaut().astype(np.float32), coords.astype(np.float32), dark)


def _sample(photo: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of photo (H,W,3) at (N,2) pixel coordinates, clamped at the border."""
    h, w = photo.shape[:2]
    x = xy[:, 0].clamp(0, w - 1.001)
    y = xy[:, 1].clamp(0, h - 1.001)
    x0, y0 = x.floor().long(), y.floor().long()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = photo[y0, x0] * (1 - fx) + photo[y0, x0 + 1] * fx
    bottom = photo[y0 + 1, x0] * (1 - fx) + photo[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def render(verts_cam: NDArray[np.floating], faces: NDArray[np.integer], K: NDArray[np.floating], size: int,
           texture: FaceTexture) -> NDArray[np.uint8]:
    """One RGB frame (size,size,3) of the textured mesh, vertices in OpenCV camera coordinates."""
    v = torch.as_tensor(np.asarray(verts_cam, np.float32))
    f = torch.as_tensor(np.asarray(faces, np.int64))
    pix = v[:, :2] / v[:, 2:3] * torch.tensor([float(K[0, 0]), float(K[1, 1])]) \
        + torch.tensor([float(K[0, 2]), float(K[1, 2])])
    frags = rasterise(pix, v[:, 2], f, size, size)
    hit = frags.face >= 0
    fid = frags.face[hit]
    bary = frags.bary[hit]
    coords = torch.as_tensor(texture.coords)[f[fid]]  # (N,3,2)
    colour = _sample(torch.as_tensor(texture.photo), (bary[:, :, None] * coords).sum(1))
    dark = (bary * torch.as_tensor(texture.dark)[f[fid]]).sum(1, keepdim=True)
    colour = colour * (1 - dark) + torch.tensor([40.0, 12.0, 14.0]) * dark
    tri = v[f[fid]]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal = normal / normal.norm(dim=1, keepdim=True).clamp_min(1e-12)
    light = torch.tensor([0.3, -0.4, -1.0])
    light = light / light.norm()
    shade = 0.45 + 0.55 * (normal @ light).abs()
    image = torch.as_tensor(BACKGROUND).expand(size, size, 3).clone()
    image[hit] = colour * shade[:, None]
    return image.clamp(0, 255).round().to(torch.uint8).numpy()


@dataclass
class Motion:
    """Per-frame ground truth of a test video (axis-angle rotations)."""

    head: NDArray[np.float64]  # (F,3) rigid head rotation about the neck joint
    jaw: NDArray[np.float64]  # (F,3)
    eyes: NDArray[np.float64]  # (F,6) left, right
    eyelids: NDArray[np.float64]  # (F,2)
    expression: NDArray[np.float64]  # (F,100)
    shape: NDArray[np.float64]  # (300,)


def default_motion(frames: int, seed: int = 0) -> Motion:
    """±25° yaw, ±15° pitch, a little roll; the jaw opens to 14° and closes; the eyes look around; a mild
    smooth expression. Periods are a few seconds at 25 fps, as a person turning to show the camera their face."""
    t = np.arange(frames) / FPS
    rng = np.random.default_rng(seed)
    head = np.stack([math.radians(15) * np.sin(2 * np.pi * t / 3.1 + 0.4),
                     math.radians(25) * np.sin(2 * np.pi * t / 4.3),
                     math.radians(5) * np.sin(2 * np.pi * t / 5.7)], axis=1)
    jaw = np.zeros((frames, 3))
    jaw[:, 0] = math.radians(14) * 0.5 * (1 - np.cos(2 * np.pi * t / 1.3))
    gaze = np.stack([0.12 * np.sin(2 * np.pi * t / 2.3 + 1.0), 0.25 * np.sin(2 * np.pi * t / 1.9), 0 * t], axis=1)
    eyes = np.concatenate([gaze, gaze], axis=1)
    lids = np.repeat((0.15 * (1 + np.sin(2 * np.pi * t / 2.9)))[:, None], 2, axis=1)
    phases = rng.uniform(0, 2 * np.pi, size=10)
    expression = np.zeros((frames, 100))
    expression[:, :10] = 0.6 * np.sin(2 * np.pi * t[:, None] / 3.7 + phases)
    shape = np.zeros(300)
    shape[:10] = rng.normal(scale=0.6, size=10)
    return Motion(head, jaw, eyes, lids, expression, shape)


def cameras(motion: Motion, pivot: NDArray[np.floating], size: int, focal: float = 1.8, distance: float = 0.62
            ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """OpenCV R (F,3,3), t (F,3), K (3,3) that show FLAME's head turning about `pivot` (the neck joint)."""
    rot = axis_angle_to_matrix(motion.head)  # (F,3,3)
    p = np.asarray(pivot, np.float64)
    R = FLIP @ rot
    centre = np.array([0.0, 0.085, distance])  # the neck pivot below the middle, so the face is centred
    t = (FLIP @ (p - np.einsum("fij,j->fi", rot, p))[..., None])[..., 0] - (FLIP @ p) + centre
    K = np.array([[focal * size, 0, size / 2], [0, focal * size, size / 2], [0, 0, 1]])
    return R, t, K


@dataclass
class SyntheticVideo:
    frames: list[NDArray[np.uint8]]
    truth: dict[str, NDArray[np.generic]]


def make_video(flame: FlameModel, texture: FaceTexture, frames: int, size: int = 512, seed: int = 0,
               motion: Motion | None = None) -> SyntheticVideo:
    """Render `frames` frames of the moving head with their ground truth."""
    m = motion or default_motion(frames, seed)
    with torch.no_grad():
        verts = flame(shape=torch.as_tensor(np.repeat(m.shape[None], frames, 0), dtype=torch.float32),
                      expression=torch.as_tensor(m.expression, dtype=torch.float32),
                      jaw=torch.as_tensor(m.jaw, dtype=torch.float32),
                      eyes=torch.as_tensor(m.eyes, dtype=torch.float32),
                      eyelids=torch.as_tensor(m.eyelids, dtype=torch.float32)).cpu().numpy().astype(np.float64)
        joints = (flame._j_template + torch.einsum("l,jkl->jk", torch.as_tensor(m.shape, dtype=torch.float32),
                                                   flame._j_dirs[:, :, :300])).cpu().numpy()
    R, t, K = cameras(m, joints[1], size)
    cam = np.einsum("fij,fvj->fvi", R, verts) + t[:, None]
    pix = cam[..., :2] / cam[..., 2:3] * K[0, 0] + size / 2
    faces = flame.faces.cpu().numpy()
    images = [render(cam[i], faces, K, size, texture) for i in range(frames)]
    truth: dict[str, NDArray[np.generic]] = {
        "R": R.astype(np.float32), "t": t.astype(np.float32), "K": K.astype(np.float32),
        "head": m.head.astype(np.float32), "jaw": m.jaw.astype(np.float32), "eyes": m.eyes.astype(np.float32),
        "eyelids": m.eyelids.astype(np.float32), "expression": m.expression.astype(np.float32),
        "shape": m.shape.astype(np.float32), "vertices_px": pix.astype(np.float32),
        "depth": cam[..., 2].astype(np.float32), "image_size": np.array(size), "fps": np.array(FPS)}
    return SyntheticVideo(images, truth)


def write_video(video: SyntheticVideo, path: Path) -> None:
    """An H.264 mp4 (near-lossless) at 25 fps, written to a temporary name and renamed."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mp4")
    h, w = video.frames[0].shape[:2]
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "12", "preset": "medium"}
        for img in video.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    truth_tmp = path.with_suffix(".truth.tmp.npz")
    np.savez_compressed(truth_tmp, allow_pickle=False, **video.truth)
    truth_tmp.replace(path.with_suffix(".truth.npz"))


def rotation_error_deg(R: NDArray[np.floating], truth: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per frame, how far the head's rotation since the first frame is from the true one (degrees): the tracking
    goal's measure, blind to a fixed offset of the whole video's orientation. R, truth: (F,3,3) camera rotations."""
    def since_first(x: NDArray[np.floating]) -> NDArray[np.float64]:
        x = np.asarray(x, np.float64)
        return np.einsum("fij,kj->fik", x, x[0])

    diff = np.einsum("fji,fjk->fik", since_first(R), since_first(truth))
    return np.degrees(np.linalg.norm(matrix_to_axis_angle(diff), axis=1))
