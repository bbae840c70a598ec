"""Background sources: a colour, a picture file, or a looping video file, each giving an opaque uint8 frame of
the output's size behind the avatar.

A picture is scaled to cover the frame (cropped at the long side, never stretched) once, when it is loaded. A
video is decoded with PyAV on its own thread into a queue of two frames already at the output size; the render
thread takes the frame whose time has come (and keeps showing the last one if decoding falls behind: the
background never holds up the avatar). At the end of the file the container is closed and opened again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
MAX_PICTURE_PIXELS = 50_000_000  # a larger picture file is refused before it is decoded (Pillow reads the header)


class BackgroundError(UserError, ValueError):
    """A background that cannot be used; the message names the file or value and what to do."""


class BackgroundSource(Protocol):
    """An opaque picture behind the avatar, `frame(t)` at media time t in seconds (H, W, 3) uint8."""

    description: str

    def frame(self, t: float) -> NDArray[np.uint8]: ...

    def close(self) -> None: ...


def _cover(image: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """Scale (bilinear) to cover width x height and crop the centre: no stretching, no bars."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    scaled = np.asarray(Image.fromarray(image).resize((sw, sh), Image.Resampling.BILINEAR))
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])


class StillBackground:
    """One unchanging picture (read-only: the GPU path keeps it on the device by identity)."""

    def __init__(self, picture: NDArray[np.uint8], description: str) -> None:
        self.description = description
        self._frame = picture
        self._frame.flags.writeable = False

    def frame(self, t: float) -> NDArray[np.uint8]:
        return self._frame

    def close(self) -> None:
        """Nothing to release."""


class ColourBackground(StillBackground):
    def __init__(self, rgb: tuple[float, float, float], width: int, height: int) -> None:
        picture = np.empty((height, width, 3), np.uint8)
        picture[:] = np.round(np.asarray(rgb) * 255.0).astype(np.uint8)
        super().__init__(picture, "#" + "".join(f"{round(c * 255):02x}" for c in rgb))


class StudioBackground(StillBackground):
    """The backdrop when none is configured: a calm wall lit from the front, made in code at the frame's size (a
    warm grey gradient, lighter behind the head and falling off to the corners), so the default picture is a
    person in a room rather than a head on black."""

    TOP = np.array([188.0, 180.0, 168.0])  # the wall near the ceiling
    BOTTOM = np.array([128.0, 122.0, 114.0])  # and towards the floor

    def __init__(self, width: int, height: int) -> None:
        y = (np.arange(height, dtype=np.float32) + 0.5) / height
        x = (np.arange(width, dtype=np.float32) + 0.5) / width
        ramp = y ** 1.3
        wall = self.TOP[None, :] * (1.0 - ramp[:, None]) + self.BOTTOM[None, :] * ramp[:, None]  # (H, 3)
        # The light falls off from behind the head (upper middle) towards the corners, measured in heights.
        dx = (x[None, :] - 0.5) * width / height
        dy = y[:, None] - 0.4
        fall = 1.0 + 0.10 * np.exp(-(dx * dx + dy * dy) / 0.08) - 0.22 * np.clip(dx * dx + dy * dy, 0.0, 1.2)
        # A fixed fine dither keeps the gentle gradient from banding in 8 bits (and in the encoders).
        dither = np.random.default_rng(0).random((height, width), np.float32) - 0.5
        picture = np.clip(wall[:, None, :] * fall[..., None] + dither[..., None], 0, 255).astype(np.uint8)
        super().__init__(picture, "studio")


class ImageBackground(StillBackground):
    def __init__(self, path: Path, width: int, height: int) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_PICTURE_PIXELS:
                    raise BackgroundError(f"background picture {path} is {im.width}x{im.height}: too large "
                                          f"(at most {MAX_PICTURE_PIXELS // 1_000_000} megapixels); scale it down")
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise BackgroundError(f"background picture {path} cannot be read ({exc}); use a PNG or JPEG file") \
                from None
        super().__init__(_cover(rgb, width, height), str(path))


class VideoBackground:
    """A video file played in a loop (no sound), paced by media time."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.description = str(path)
        self.width, self.height = width, height
        self.path = path
        self.loops = 0
        self._queue: queue.Queue[tuple[float, NDArray[np.uint8]]] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        first = self._open_first()  # a file that cannot be played is an error now, not a black background later
        self._current = first
        self._next: tuple[float, NDArray[np.uint8]] | None = None
        self._start: float | None = None
        self._thread = threading.Thread(target=self._decode_loop, name="background-video", daemon=True)
        self._thread.start()

    def _open_first(self) -> NDArray[np.uint8]:
        import av

        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise BackgroundError(f"background video {self.path} has no video stream")
                for frame in container.decode(video=0):
                    return np.asarray(frame.to_ndarray(width=self.width, height=self.height, format="rgb24"))
        except (av.error.FFmpegError, OSError) as exc:  # type: ignore[attr-defined]
            raise BackgroundError(f"background video {self.path} cannot be played ({exc}); use an MP4 or WebM "
                                  "file") from None
        raise BackgroundError(f"background video {self.path} has no frames")

    def _decode_loop(self) -> None:
        import av

        offset = 0.0
        while not self._stop.is_set():
            last = 0.0
            try:
                with av.open(str(self.path)) as container:  # closed at the end of each pass
                    stream = container.streams.video[0]
                    base = float(stream.time_base) if stream.time_base is not None else 1.0 / 90_000
                    for frame in container.decode(stream):
                        t = float(frame.pts) * base if frame.pts is not None else last
                        last = t
                        image = np.asarray(frame.to_ndarray(width=self.width, height=self.height, format="rgb24"),
                                           np.uint8)
                        while not self._stop.is_set():
                            try:
                                self._queue.put((offset + t, image), timeout=0.2)
                                break
                            except queue.Full:
                                continue
                        if self._stop.is_set():
                            return
            except (av.error.FFmpegError, OSError) as exc:  # type: ignore[attr-defined]
                log.warning("background video %s stopped playing: %s", self.path, exc)
                return
            offset += max(last + 1.0 / 30.0, 0.04)  # the next pass starts after the last frame
            self.loops += 1
            time.sleep(0)

    def frame(self, t: float) -> NDArray[np.uint8]:
        if self._start is None:
            self._start = t
        elapsed = t - self._start
        while True:
            if self._next is None:
                try:
                    self._next = self._queue.get_nowait()
                except queue.Empty:
                    return self._current
            if self._next[0] > elapsed:
                return self._current
            self._current = self._next[1]
            self._next = None

    @property
    def decoding(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def open_background(spec: tuple[float, float, float] | Path | None, width: int, height: int) -> BackgroundSource:
    """A colour, or a picture or video file told apart by its suffix (blocking: reads the file); None: the
    studio backdrop."""
    if spec is None:
        return StudioBackground(width, height)
    if not isinstance(spec, Path):
        return ColourBackground(spec, width, height)
    suffix = spec.suffix.lower()
    if not spec.is_file():
        raise BackgroundError(f"background file {spec} does not exist; fix avatar.background or "
                              "avatar.backgrounds")
    if suffix in IMAGE_SUFFIXES:
        return ImageBackground(spec, width, height)
    if suffix in VIDEO_SUFFIXES:
        return VideoBackground(spec, width, height)
    raise BackgroundError(f"background file {spec} is neither a picture ({', '.join(IMAGE_SUFFIXES)}) nor a "
                          f"video ({', '.join(VIDEO_SUFFIXES)})")
