"""A session: one avatar served by the daemon, the unit the daemon runs once by default and N times when it
hosts several. It owns everything of that avatar: the audio source and the inbox a remote talker's audio
arrives in, the face driver's state, the mixer with its controls, the avatar, the pipeline with its clock,
sinks, statistics and watchdog, and its outputs (WebRTC viewers, WHIP/Janus publishers, recorder, delayed
audio). It implements `MediaHub`, so outputs and HTTP routes serve a session exactly as they served the daemon.

What a process has once (the HTTP server, the OSC/VMC/MIDI surfaces, the registry of sessions, admission) is
the host's: `bridge.runtime.daemon.Daemon`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.clock import MediaClock
from bridge.core.config import Config
from bridge.core.deadline import off_loop
from bridge.core.errors import UserError
from bridge.core.fanout import Broadcast
from bridge.core.interfaces import (
    AlphaOutput,
    AudioChunk,
    ControlEvent,
    ControlSurface,
    FaceDriver,
    FrameSink,
    VideoFrame,
)
from bridge.core.models import ModelCache
from bridge.core.stats import PipelineStats
from bridge.runtime import build
from bridge.runtime.live import LiveStats, watch_frames
from bridge.runtime.pipeline import Pipeline
from bridge.runtime.recording import Recording

if TYPE_CHECKING:
    from bridge.core.interfaces import OutputProbe
    from drivers.audio.webrtc_in import RemoteAudioInbox
    from drivers.avatar.scene.control import BackgroundTable
    from drivers.output.passthrough import AudioPassthrough
    from drivers.output.recorder import RecorderSink
    from drivers.output.virtual_mic import VirtualMic
    from drivers.output.webrtc.peers import ViewerHub
    from drivers.output.webrtc.publisher import Publisher

log = logging.getLogger(__name__)

PUBLISHERS = ("whip", "janus")


class Session:
    """One avatar and its inputs and outputs; built (blocking: loads models) and then started on the loop.
    `models` is the host's cache: sessions of one checkpoint share its weights (and their face driver's hops
    are batched), while each keeps its own state."""

    def __init__(
        self,
        name: str,
        config: Config,
        *,
        models: ModelCache,
        duration: float | None = None,
        live: bool | None = None,
        surfaces: Callable[[], list[ControlSurface]] = list,
        progress: Callable[[str], None] | None = None,
        fixed: bool = True,
    ) -> None:
        say = progress or (lambda _msg: None)
        self.name = name
        self.fixed = fixed  # made by the config (the default one included): not ended over HTTP
        self.created = time.time()
        self._config = config
        self._surfaces = surfaces  # the host's control surfaces (shared by its sessions)
        self._clock = MediaClock(config.video.fps)
        self._stats = PipelineStats()
        self.live_stats = LiveStats()
        say(f"loading the {config.avatar.kind} avatar")
        self._alpha_demand = AlphaDemand()
        self.avatar = build.avatar(config, self._alpha_demand, models)
        face_driver: FaceDriver | None = None
        try:  # a part that fails to build leaves the shared ones it joined (a frame or hop batcher), as an end would
            self._backgrounds = build.backgrounds(config, self.avatar)
            say(f"starting the {config.face.driver} face driver")
            self.face_driver = face_driver = build.face_driver(config, self.avatar, models)
            self._remote_audio: RemoteAudioInbox = build.remote_audio()
            self.audio_source = build.audio_source(config, self._remote_audio)
            self.mixer = build.mixer(config, self.avatar)
            if live is None:
                live = not (config.audio.source == "file" and not config.audio.realtime)
            av_delay = None if config.pipeline.av_delay_ms == "auto" else float(config.pipeline.av_delay_ms) / 1000.0
            self.pipeline = Pipeline(
                self._clock,
                self.audio_source,
                self.face_driver,
                self.avatar,
                stats=self._stats,
                mixer=self.mixer,
                live=live,
                duration=duration,
                render_queue=config.pipeline.render_queue,
                sink_queue=config.pipeline.sink_queue,
                av_delay=av_delay,
                margin=config.pipeline.margin_s(self.avatar.device),
            )
            self._initial_sinks = build.sinks(config)
            record_to = config.outputs.record.path  # the config's own recording (the default session's)
            self._first_recorder = build.recorder(config, record_to) if record_to is not None else None
        except BaseException:
            for part in (face_driver, self.avatar):
                if part is not None:
                    with contextlib.suppress(Exception):
                        part.close()
            raise
        self._recording: Recording | None = None
        self._viewers: ViewerHub | None = None
        self.publishers: dict[str, Publisher] = {}
        self._passthrough: AudioPassthrough | None = None
        self._virtual_mic: VirtualMic | None = None  # when outputs.passthrough.create
        self._watch: asyncio.Task[None] | None = None
        self.running = False

    # --- MediaHub: what outputs and routes use ----------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @property
    def clock(self) -> MediaClock:
        return self._clock

    @property
    def stats(self) -> PipelineStats:
        return self._stats

    @property
    def frames(self) -> Broadcast[VideoFrame]:
        return self.pipeline.frames

    @property
    def audio_out(self) -> Broadcast[AudioChunk]:
        return self.pipeline.audio_out

    @property
    def audio_in(self) -> Broadcast[AudioChunk]:
        return self.pipeline.audio_in

    @property
    def av_delay(self) -> float:
        return self.pipeline.av_delay

    @property
    def remote_audio(self) -> RemoteAudioInbox:
        return self._remote_audio

    @property
    def passthrough(self) -> AudioPassthrough | None:
        return self._passthrough

    @property
    def control_surfaces(self) -> list[ControlSurface]:
        return self._surfaces()

    @property
    def avatar_name(self) -> str:
        return self.avatar.name

    @property
    def audio_source_name(self) -> str:
        return self.audio_source.name

    def surface(self, name: str) -> ControlSurface | None:
        return next((s for s in self._surfaces() if s.name == name), None)

    def add_sink(self, sink: FrameSink) -> None:
        self.pipeline.add_sink(sink)

    def remove_sink(self, sink: FrameSink) -> None:
        self.pipeline.remove_sink(sink)

    def follow_output(self, stage: str, probe: OutputProbe) -> None:
        self.pipeline.watchdog.follow(stage, probe)

    def forget_output(self, stage: str) -> None:
        self.pipeline.watchdog.forget(stage)

    def output_failures(self) -> list[BaseException]:
        """Why outputs stopped before the end (a recording on a full disk, a camera that went away)."""
        return [runner.failed for runner in self.pipeline.sinks if runner.failed is not None]

    def emit_control(self, event: ControlEvent) -> bool:
        return self.mixer.apply(event)

    @property
    def muted(self) -> bool:
        return self.pipeline.muted

    def set_muted(self, value: bool) -> None:
        """Silence the input for lip sync and outputs (the avatar keeps its idle life)."""
        self.pipeline.muted = bool(value)

    @property
    def frozen(self) -> bool:
        return self.pipeline.frozen

    def set_frozen(self, value: bool) -> None:
        """Hold the current picture; outputs keep receiving frames at the frame rate."""
        self.pipeline.frozen = bool(value)

    def set_audio_source(self, source: str, device: str | int | None = None) -> None:
        """Switch the audio input while running (blocking: opens the device; raises UserError)."""
        wanted = self._config.model_copy(deep=True)
        wanted.audio.source = source  # type: ignore[assignment]
        if device is not None:
            wanted.audio.device = device
        new = build.audio_source(wanted, self._remote_audio)
        self.pipeline.replace_source(new)
        self.audio_source = new
        self._config.audio.source = source  # type: ignore[assignment]
        if source == "microphone":
            self._config.audio.device = device

    def set_audio_output(self, device: str | int | None) -> None:
        """Play the delayed speech on `device` (blocking: opens it; raises UserError)."""
        new = build.passthrough(self._config, self, device)
        new.start()
        old, self._passthrough = self._passthrough, new
        if old is not None:
            old.stop()
        self.follow_output("voice", new.progress)
        cfg = self._config.outputs.passthrough
        cfg.device = device
        cfg.enabled = True

    @property
    def virtual_mic(self) -> VirtualMic | None:
        return self._virtual_mic

    def _create_virtual_mic(self) -> None:
        """Make the virtual microphone and play the delayed voice into it (blocking; raises UserError)."""
        mic = build.virtual_mic(self._config)
        mic.create()
        self._virtual_mic = mic
        self._config.outputs.passthrough.device = mic.device
        self._config.outputs.passthrough.enabled = True

    # --- recording (bridge.runtime.recordings: where and how many) ---------------------------------------

    @property
    def recording(self) -> Recording | None:
        """The session's latest recording (running, stopped or given up), None when it never recorded."""
        return self._recording

    def record(self, sink: RecorderSink) -> Recording:
        """Record into `sink` from the next frame on, in place of a recording that stopped or gave up (blocking:
        its file is closed first); raises UserError once the session has ended."""
        if self.pipeline.finished.is_set():
            raise UserError(f"session {self.name!r} has ended; start a new one to record")
        old = self._recording
        if old is not None:
            self.pipeline.remove_sink(old.sink)
        runner = self.pipeline.add_sink(sink)
        self._recording = Recording(sink, runner, started=time.time(), fps=self._config.video.fps)
        return self._recording

    def stop_recording(self, timeout: float) -> Recording | None:
        """Blocking: stop recording and finalise the file, waiting at most `timeout` s for it."""
        recording = self._recording
        if recording is not None and not recording.stopped:
            recording.stopped = True
            self.pipeline.remove_sink(recording.sink, timeout)
        return recording

    def health(self) -> dict[str, Any]:
        """The watchdog's view (see bridge.runtime.watchdog): ok, and which stages stalled since when."""
        report = self.pipeline.watchdog.report()
        return {"running": self.running, **report}

    # --- WebRTC ------------------------------------------------------------------------------------------

    def open_viewers(self) -> ViewerHub:
        """The session's WebRTC viewers (WHEP, the JSON offer, talk-in audio), made once: loads the WebRTC
        stack, so the host asks for it only when it serves HTTP."""
        if self._viewers is None:
            self._viewers = build.viewers(self._config, self)
        return self._viewers

    @property
    def viewers(self) -> ViewerHub:
        if self._viewers is None:
            raise RuntimeError(f"session {self.name!r} serves no WebRTC viewers (the daemon runs without HTTP)")
        return self._viewers

    @property
    def viewer_count(self) -> int:
        return self._viewers.count if self._viewers is not None else 0

    # --- running ---------------------------------------------------------------------------------------

    @property
    def alpha_demand(self) -> AlphaDemand:
        return self._alpha_demand

    @property
    def backgrounds(self) -> BackgroundTable:
        return self._backgrounds

    def _claim_alpha_for_sinks(self) -> None:
        """Sinks that carry alpha (a .webm/.mov recording, an RGBA virtual camera) want it for the whole run."""
        first = [self._first_recorder] if self._first_recorder is not None else []
        for sink in [*first, *self._initial_sinks]:
            if isinstance(sink, AlphaOutput) and sink.wants_alpha:
                self._alpha_demand.claim(sink.name)

    async def start(self, on_finished: Callable[[], object]) -> None:
        """Attach the sinks, start the pipeline and the outputs; `on_finished` is called (from a pipeline
        thread) when the stream ends by itself (a file ran out, a duration passed, a stage failed)."""
        loop = asyncio.get_running_loop()
        self.pipeline.on_finished = on_finished
        self._claim_alpha_for_sinks()
        if self._first_recorder is not None:
            self.record(self._first_recorder)
        for sink in self._initial_sinks:
            self.pipeline.add_sink(sink)
        self.pipeline.start()
        self._watch = loop.create_task(watch_frames(self.frames, self.clock, self.live_stats))
        if self._viewers is not None:
            wanted = {"whip": self._config.webrtc.whip_url, "janus": self._config.webrtc.janus.url}
            self.publishers = {name: build.publisher(name, self._config, self, self._viewers.fanout)
                               for name in PUBLISHERS if wanted[name]}
            for name, publisher in self.publishers.items():
                publisher.start()
                self.follow_output(f"publisher:{name}", publisher.progress)
        if self._config.outputs.passthrough.create:
            try:
                await loop.run_in_executor(None, self._create_virtual_mic)
            except Exception as exc:  # UserError; the session runs without it
                log.warning("the virtual microphone is off: %s", exc)
        if self._config.outputs.passthrough.enabled:
            try:
                await loop.run_in_executor(None, self.set_audio_output, self._config.outputs.passthrough.device)
            except Exception as exc:
                log.warning("delayed audio passthrough is off: %s", exc)
        self.running = True

    async def stop(self) -> None:
        """Stop the pipeline and its outputs (a recording is finalised), the viewers, publishers and delayed
        audio in parallel, each with a bound, so a stuck part cannot hold the others (about 1.5 s at most)."""
        self.running = False

        async def bounded(what: Any, seconds: float) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(what, seconds)

        passthrough, self._passthrough = self._passthrough, None
        mic, self._virtual_mic = self._virtual_mic, None
        publishers, self.publishers = self.publishers, {}

        async def audio_out() -> None:  # the delayed voice stops before the virtual microphone it plays into goes
            fix = "the sound server may be hung"  # both stop within their own bounds; these are the last resort
            if passthrough is not None:
                await off_loop(passthrough.stop, 1.5, "stopping the delayed voice", fix)
            if mic is not None:
                await off_loop(mic.remove, 1.5, "removing the virtual microphone", fix)

        async def webrtc() -> None:
            for name, publisher in publishers.items():
                self.forget_output(f"publisher:{name}")
                await publisher.stop()
            if self._viewers is not None:
                await self._viewers.close_all()

        await asyncio.gather(
            off_loop(lambda: self.pipeline.stop(1.5), 2.0, "stopping the pipeline", "see the log"),
            bounded(audio_out(), 1.5),
            bounded(webrtc(), 1.5),
            return_exceptions=True,
        )
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        with contextlib.suppress(Exception):
            await self._remote_audio.close()
        with contextlib.suppress(Exception):
            self._backgrounds.close()
        with contextlib.suppress(Exception):
            self.avatar.close()
        with contextlib.suppress(Exception):
            self.face_driver.close()  # it leaves the hop batcher its model shares with other sessions

    def describe(self) -> dict[str, Any]:
        """What `GET /api/sessions` lists for this session."""
        cfg = self._config
        return {"id": self.name, "fixed": self.fixed, "running": self.running, "created": self.created,
                "avatar": cfg.avatar.kind, "face": cfg.face.driver, "audio": cfg.audio.source,
                "size": [cfg.video.width, cfg.video.height], "fps": cfg.video.fps,
                "frames": self.live_stats.frames, "viewers": self.viewer_count,
                "late_frames": self.late_frames(), "recording": self.recording_status()}

    def recording_status(self) -> dict[str, Any]:
        """Whether the session records, and its latest recording's file name (never its folder)."""
        if self._recording is None:
            return {"recording": False, "file": None}
        return self._recording.describe()

    def late_frames(self) -> int:
        """Frames the pipeline dropped because they were late (every stage)."""
        stages = self._stats.snapshot()["stages"]
        return sum(int(stage.get("dropped", 0)) for stage in stages.values())
