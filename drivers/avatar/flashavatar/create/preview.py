"""`preview.mp4`: the new avatar driven by the video's own tracking, side by side with the video's crops.

The first thing a user looks at after training: where the avatar follows the video, tracking and training both
worked; where it does not, the report says which of the two to blame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from drivers.avatar.flashavatar.create.stages import Progress, atomic_path
from drivers.avatar.flashavatar.create.video import FPS

if TYPE_CHECKING:
    from drivers.avatar.flashavatar.create.tracking import TrackingResult

BATCH = 8


def write_preview(avatar_toml: Path, tracking: TrackingResult, images: list[Path], out: Path,
                  device: str = "auto", max_frames: int | None = None,
                  progress: Callable[[str, int], Progress] | None = None) -> Path:
    """Video crop | avatar render, one row per tracked frame, at FPS, written atomically to `out`."""
    import av
    from PIL import Image

    from bridge.core.config import load_config
    from bridge.core.face_params import FaceParams
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
    from drivers.avatar.flashavatar.offline import render_batch

    size = tracking.image_size  # the crops' size, which the tracked cameras see
    config = load_config(avatar_toml, overrides={"avatar": {"device": device}, "video": {"width": size, "height": size}})
    avatar = FlashAvatarAvatar.from_config(config)
    n = len(images) if max_frames is None else min(len(images), max_frames)
    bar = progress("preview", n) if progress is not None else None
    w, h = avatar.width, avatar.height
    try:
        with atomic_path(out) as tmp, av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = 2 * w, h, "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast"}
            for s in range(0, n, BATCH):
                idx = list(range(s, min(n, s + BATCH)))
                params = [FaceParams(expression=tracking.expression[i], jaw=tracking.jaw[i],
                                     eyes=tracking.eyes[i].reshape(2, 3), eyelids=tracking.eyelids[i]) for i in idx]
                views = np.tile(np.eye(4, dtype=np.float32), (len(idx), 1, 1))
                views[:, :3, :3], views[:, :3, 3] = tracking.R[idx], tracking.t[idx]
                for i, img in zip(idx, render_batch(avatar, params, views=views)):
                    with Image.open(images[i]) as im:
                        video = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
                    row = np.ascontiguousarray(np.concatenate([video, img.rgb], axis=1))
                    for packet in stream.encode(av.VideoFrame.from_ndarray(row, format="rgb24")):
                        container.mux(packet)
                    if bar is not None:
                        bar.update()
            for packet in stream.encode():
                container.mux(packet)
    finally:
        avatar.close()
        if bar is not None:
            bar.close()
    return out
