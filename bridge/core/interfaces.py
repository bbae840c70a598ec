"""The small interfaces every driver implements, and the values that flow between them.

Data flows one way: AudioSource → FaceDriver → mixer → Avatar → FrameSinks, with ControlSurfaces feeding the
mixer. Times are seconds on the daemon's media clock (`bridge.core.clock.MediaClock`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from bridge.core.face_params import FaceParams

SAMPLE_RATE = 16_000
"""Every AudioSource delivers 16 kHz mono float32: what HuBERT and the procedural driver consume."""


@dataclass
class AudioChunk:
    """Mono float32 samples in [-1, 1]; `pts` is the media-clock time of the first sample."""

    samples: NDArray[np.float32]
    pts: float
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def end_pts(self) -> float:
        return self.pts + self.duration


@dataclass
class RenderedImage:
    """What an avatar produces: host RGB uint8 (H, W, 3) and optional alpha uint8 (H, W)."""

    rgb: NDArray[np.uint8]
    alpha: NDArray[np.uint8] | None = None


@dataclass
class VideoFrame:
    """A rendered frame on its way to sinks. `pts` is its presentation time; `audio_time` the capture time
    of the audio that drove it (for glass-to-glass latency)."""

    rgb: NDArray[np.uint8]
    pts: float
    index: int
    alpha: NDArray[np.uint8] | None = None
    audio_time: float | None = None
    params: FaceParams | None = None
    rendered_at: float = 0.0

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


@dataclass
class StreamInfo:
    width: int
    height: int
    fps: int
    sample_rate: int = SAMPLE_RATE
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class AudioSource(Protocol):
    """Delivers 16 kHz mono audio chunks stamped on the media clock."""

    name: str

    def start(self, now: Callable[[], float]) -> None:
        """Begin capture; `now` reads the media clock used to stamp chunks."""

    def read(self, timeout: float) -> AudioChunk | None:
        """The next chunk, or None when none arrived within `timeout` seconds."""

    @property
    def finished(self) -> bool:
        """True once no more audio will come (end of a file)."""

    def stop(self) -> None: ...


@runtime_checkable
class FaceDriver(Protocol):
    """Turns audio into one FaceParams per video frame. Frame k of a stream that started at `start_pts`
    covers audio [start_pts + k/fps, start_pts + (k+1)/fps) and carries that start as its `audio_time`."""

    name: str
    fps: int

    @property
    def latency(self) -> float:
        """Algorithmic latency in seconds: audio in → parameters out, compute excluded."""

    def reset(self, start_pts: float) -> None: ...

    def push(self, chunk: AudioChunk) -> list[FaceParams]:
        """Feed audio; return the frames that became determined (possibly none)."""

    def flush(self) -> list[FaceParams]:
        """Audio ended: return the remaining frames."""


@runtime_checkable
class Avatar(Protocol):
    """Renders FaceParams to an image on its device (CUDA when present, else CPU)."""

    name: str
    width: int
    height: int
    device: str

    def render(self, params: FaceParams) -> RenderedImage: ...

    def close(self) -> None: ...


@runtime_checkable
class FrameSink(Protocol):
    """Receives frames (and optionally audio) in presentation order. Each sink runs on its own thread
    behind a bounded queue, so a slow sink drops its own frames and never stalls the others."""

    name: str

    def open(self, info: StreamInfo) -> None: ...

    def write_video(self, frame: VideoFrame) -> None: ...

    def write_audio(self, chunk: AudioChunk) -> None: ...

    def close(self) -> None: ...


@dataclass
class ControlEvent:
    """A control input: `target` in the control vocabulary (e.g. "blend/jawOpen", "preset/happy", "gaze",
    "blink", "reset", "flame/expression/3"), with zero or more float arguments."""

    target: str
    values: tuple[float, ...] = ()
    source: str = ""
    time: float = 0.0


ControlSink = Callable[[ControlEvent], None]


@runtime_checkable
class ControlSurface(Protocol):
    """Emits control events (OSC, VMC, MIDI, the HTTP panel). Runs on the daemon's asyncio loop."""

    name: str

    async def start(self, emit: ControlSink) -> None: ...

    async def stop(self) -> None: ...
