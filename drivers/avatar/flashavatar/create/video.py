"""A phone video's frames as the rest of avatar creation wants them: upright and at a steady 25 fps.

Phones store portrait video as landscape frames plus a display matrix ("rotate by 90°"); the frames are turned
as a player would show them. Phones also record at a variable frame rate; the frames are resampled by their
timestamps to `FPS`: output frame k is the source frame shown at time k / FPS (the nearest in time), so motion
keeps its real speed whatever the recording's rate did.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bridge.core.errors import UserError

if TYPE_CHECKING:
    from av.container import InputContainer

FPS = 25


class VideoError(UserError, ValueError):
    """The video cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int  # upright (after the rotation is applied)
    height: int
    rotation: int  # degrees counterclockwise the stored frames are turned for display (0, ±90, 180)
    duration_s: float
    source_fps: float  # the container's average rate

    @property
    def frames(self) -> int:
        """Frames after resampling to FPS."""
        return max(1, int(round(self.duration_s * FPS)))


def _damaged(path: Path, exc: Exception) -> VideoError:
    return VideoError(f"{path} cannot be read as a video ({type(exc).__name__}: {str(exc)[:120]}): the file is "
                      "damaged or was cut short; copy it from the phone again, or re-export it (e.g. ffmpeg -i "
                      "in.mov -c:v libx264 out.mp4)")


def _open(path: Path) -> InputContainer:
    import av

    if not path.is_file():
        raise VideoError(f"video {path} does not exist; give the path of the recording (mp4, mov, mkv, webm)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, exc) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream (is it an audio file?); give a video of your face")
    return container


def probe(path: Path) -> VideoInfo:
    """Size, rotation, duration and rate, from the container and its first frame."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else 0.0
        duration = float(stream.duration * tb) if stream.duration and tb else 0.0
        if duration <= 0 and container.duration:
            duration = container.duration / 1_000_000
        try:
            first = next(container.decode(stream))
        except StopIteration:
            raise VideoError(f"{path} holds no video frames; record the video again") from None
        except (av.FFmpegError, OSError) as exc:
            raise _damaged(path, exc) from None
        rotation = int(round((first.rotation or 0) / 90)) * 90
        w, h = first.width, first.height
        if rotation % 180:
            w, h = h, w
        rate = float(stream.average_rate) if stream.average_rate else FPS
    finally:
        container.close()
    if duration <= 0:
        raise VideoError(f"{path} does not say how long it is; re-export it (e.g. ffmpeg -i in -c copy out.mp4)")
    return VideoInfo(path, w, h, rotation, duration, rate)


@dataclass
class Frame:
    index: int  # output frame number at FPS
    time_s: float  # the source frame's presentation time
    rgb: np.ndarray  # (H, W, 3) uint8, upright


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=k)) if k else rgb


def frames(info: VideoInfo, max_side: int | None = None) -> Iterator[Frame]:
    """The upright frames resampled to FPS; `max_side` scales them down (keeping the aspect) while decoding.

    A decoding error part way raises VideoError naming the time where the file breaks."""
    import av

    scale = 1.0
    if max_side is not None and max(info.width, info.height) > max_side:
        scale = max_side / max(info.width, info.height)
    container = _open(info.path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    tb = float(stream.time_base) if stream.time_base else 1.0 / FPS
    period = 1.0 / FPS
    k = 0
    t0: float | None = None
    prev: tuple[float, av.VideoFrame] | None = None
    last_t = 0.0

    def emit(f: av.VideoFrame, t: float) -> Frame:
        if scale != 1.0:
            w, h = max(2, int(round(f.width * scale))), max(2, int(round(f.height * scale)))
            rgb = f.to_ndarray(format="rgb24", width=w, height=h)
        else:
            rgb = f.to_ndarray(format="rgb24")
        return Frame(k, t, _upright(rgb, info.rotation))

    try:
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb)
                if t0 is None:
                    t0 = t
                if prev is not None and t <= prev[0]:
                    continue  # a repeated or out-of-order timestamp
                if prev is not None:
                    # the previous frame is the nearest in time for every output time before the midpoint
                    while t0 + k * period < (prev[0] + t) / 2:
                        yield emit(prev[1], prev[0])
                        k += 1
                prev = (t, frame)
                last_t = t
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{info.path} breaks at {last_t:.2f} s ({type(exc).__name__}: {str(exc)[:80]}): the "
                             "file is damaged or was cut short; copy it again, or trim it before that point "
                             f"(ffmpeg -t {max(0.0, last_t - 0.1):.1f} -i in -c copy out.mp4)") from None
        if prev is not None and t0 is not None:
            end = min(info.duration_s, prev[0] - t0 + 1.0 / max(info.source_fps, 1.0))
            while k * period < end - period / 2 or k == 0:
                yield emit(prev[1], prev[0])
                k += 1
    finally:
        container.close()  # also when the caller stops early
