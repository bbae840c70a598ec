"""The small interfaces every driver implements, the values that flow between them, and `MediaHub`, what
outputs and HTTP routes may use of the running daemon.

Data flows one way: AudioSource → FaceDriver → mixer → Avatar → FrameSinks, with ControlSurfaces feeding the
mixer. Times are seconds on the daemon's media clock (`bridge.core.clock.MediaClock`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.clock import MediaClock
from bridge.core.config import Config
from bridge.core.face_params import FaceParams
from bridge.core.fanout import Broadcast
from bridge.core.stats import PipelineStats

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
class NeckPose:
    """Where a head's neck base is in the frame (pixels), its in-plane rotation (radians, clockwise on screen)
    and the pixels per metre there: what a torso drawn under the head follows."""

    x: float
    y: float
    roll: float = 0.0
    px_per_m: float = 0.0


@dataclass
class RenderedImage:
    """What an avatar produces: host RGB uint8 (H, W, 3) and optional alpha uint8 (H, W). A head that renders
    only its region of the frame says where that region starts (`origin`, x and y of its top-left pixel) and
    where its neck base is (`neck`); a whole frame has origin (0, 0)."""

    rgb: NDArray[np.uint8]
    alpha: NDArray[np.uint8] | None = None
    origin: tuple[int, int] = (0, 0)
    neck: NeckPose | None = None
    foreground: NDArray[np.uint8] | None = None  # with alpha over a background: the avatar alone over black


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
    foreground: NDArray[np.uint8] | None = None
    """With alpha: the avatar alone, premultiplied over black (`rgb` then has the background behind it)."""

    def premultiplied(self) -> NDArray[np.uint8]:
        """The colour to pair with `alpha`: the avatar over black, for outputs that carry alpha."""
        return self.rgb if self.foreground is None else self.foreground

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
    error: BaseException | None  # what ended capture, when it failed: the pipeline raises it
    end_pts: float | None  # where the audio ends on the media clock, once that is known (a file); else None

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

    def close(self) -> None:
        """Its session ended: stop its thread and leave what it shares with other sessions (a hop batcher)."""


@runtime_checkable
class Avatar(Protocol):
    """Renders FaceParams to an image on its device (CUDA when present, else CPU)."""

    name: str
    width: int
    height: int
    device: str
    expression_channels: dict[str, int]
    """Named expression channels (e.g. "pucker" → 3) that drivers may animate; empty for FLAME avatars."""

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


@runtime_checkable
class AlphaOutput(Protocol):
    """A sink that can carry alpha says whether it will (a .webm/.mov recording, an RGBA virtual camera), so
    the daemon claims alpha for it (`MediaHub.alpha_demand`) before the first frame."""

    name: str

    @property
    def wants_alpha(self) -> bool: ...


@runtime_checkable
class PacedSink(Protocol):
    """A sink that sends from a thread of its own (a virtual camera on a steady clock): its `write_video` only
    hands the frame over, so only the sink knows whether frames still leave. The watchdog follows its
    `progress` (an OutputProbe: when a send last completed) instead of counting handovers."""

    name: str

    def progress(self) -> tuple[float | None, str | None]: ...


@dataclass
class ControlEvent:
    """A control input: `target` in the control vocabulary (e.g. "blend/jawOpen", "preset/happy", "gaze",
    "blink", "reset", "flame/expression/3"), with zero or more float arguments."""

    target: str
    values: tuple[float, ...] = ()
    source: str = ""
    time: float = 0.0
    session: str = ""  # the session it is for (a name the daemon's registry holds); "" is the default session


ControlSink = Callable[[ControlEvent], object]
"""Where surfaces hand their events (the daemon's `emit_control`; what it returns is not their concern)."""


class SessionScope(Protocol):
    """The sessions a control surface may address by name (`/avatar/<session>/…` in OSC): the daemon's registry.
    A surface asks before it uses a name, so an unknown one is an unknown address, never a new key."""

    def has_session(self, name: str) -> bool: ...

    def control_state(self, session: str) -> dict[str, Any]:
        """The mixer state of `session` ("" is the default session); empty when it has ended."""
        ...

    def background_control(self, session: str) -> BackgroundControl | None:
        """The backgrounds `session` ("" is the default session) can switch between; None when it has ended."""
        ...


@runtime_checkable
class ControlSurface(Protocol):
    """Emits control events (OSC, VMC, MIDI, the HTTP panel). Runs on the daemon's asyncio loop."""

    name: str

    async def start(self, emit: ControlSink) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """JSON-able counters and state for the panel and `/api/state`."""
        ...


class BackgroundControl(Protocol):
    """The backgrounds a running avatar can switch between by name (the configured table): a vocabulary, so
    HTTP and OSC never hand a path to the daemon."""

    def names(self) -> list[str]: ...

    @property
    def current(self) -> str: ...

    def select(self, name: str) -> None:
        """Load and show the background `name` (blocking: reads its file; raises UserError)."""

    def request(self, name: str) -> bool:
        """`select` on a worker thread, without waiting; False (nothing done) when `name` is not in the table."""


class RemoteAudioInlet(Protocol):
    """Where a remote WebRTC peer's audio track is handed, for the WebRTC audio source to read."""

    def consume(self, track: Any) -> object:
        """Start reading `track` (an aiortc audio track) on the running loop; the newest talker wins."""

    async def close(self) -> None: ...


OutputProbe = Callable[[], tuple[float | None, str | None]]
"""How an output that runs by itself tells the watchdog how it is: (when it last made progress, on
time.monotonic, or None before its first; why it gave up, or None while it works)."""


class DelayedAudioOutput(Protocol):
    """The speech played on a local device with the video's delay (audio passthrough)."""

    @property
    def delay(self) -> float:
        """Seconds from capture to playback, as configured or measured."""

    @property
    def underruns(self) -> int: ...

    def set_delay(self, delay_ms: float | str) -> None: ...

    def progress(self) -> tuple[float | None, str | None]:
        """An OutputProbe: when the sound device last took samples, and why it stopped playing if it did."""


class MediaHub(Protocol):
    """The running daemon as outputs and HTTP routes see it: its clock, config and statistics, the media it
    publishes, where sinks attach and control events enter, and the switches the panel offers."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> MediaClock: ...

    @property
    def stats(self) -> PipelineStats: ...

    @property
    def running(self) -> bool: ...

    @property
    def frames(self) -> Broadcast[VideoFrame]:
        """Every rendered frame, latest wins per subscriber."""

    @property
    def audio_in(self) -> Broadcast[AudioChunk]:
        """The input audio as captured (media-clock pts)."""

    @property
    def audio_out(self) -> Broadcast[AudioChunk]:
        """The input audio stamped with its presentation time (pts + av_delay)."""

    @property
    def av_delay(self) -> float:
        """Seconds from audio capture to the presentation of the frames it drove."""

    @property
    def remote_audio(self) -> RemoteAudioInlet: ...

    @property
    def passthrough(self) -> DelayedAudioOutput | None: ...

    @property
    def control_surfaces(self) -> list[ControlSurface]: ...

    @property
    def avatar_name(self) -> str: ...

    @property
    def audio_source_name(self) -> str: ...

    @property
    def muted(self) -> bool: ...

    @property
    def frozen(self) -> bool: ...

    @property
    def alpha_demand(self) -> AlphaDemand:
        """Where outputs that carry alpha say so while they run; the avatar renders alpha while any does."""

    @property
    def backgrounds(self) -> BackgroundControl: ...

    def add_sink(self, sink: FrameSink) -> None: ...

    def remove_sink(self, sink: FrameSink) -> None: ...

    def follow_output(self, stage: str, probe: OutputProbe) -> None:
        """Have `/health` name `stage` when `probe` says it stopped making progress or gave up."""

    def forget_output(self, stage: str) -> None: ...

    def emit_control(self, event: ControlEvent) -> bool:
        """Queue a control event for the mixer; False when it was rejected (see the mixer's last error)."""

    def set_muted(self, value: bool) -> None: ...

    def set_frozen(self, value: bool) -> None: ...

    def set_audio_source(self, source: str, device: str | int | None = None) -> None:
        """Switch the audio input (blocking: opens the device; raises UserError)."""

    def set_audio_output(self, device: str | int | None) -> None:
        """Play the delayed speech on `device` (blocking: opens it; raises UserError)."""

    def surface(self, name: str) -> ControlSurface | None:
        """A running control surface by name ("osc", "vmc", "midi"), or None."""

    def health(self) -> dict[str, Any]:
        """Whether every pipeline stage produces: {"ok", "running", "stalled", "stages"} (bridge.runtime.watchdog)."""
