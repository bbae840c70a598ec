"""The daemon: builds drivers from the config, runs the pipeline threads, and serves HTTP, OSC, VMC and MIDI
on one asyncio loop until stopped (SIGINT/SIGTERM, the end of a file, or a duration).

It implements `MediaHub`, the contract outputs and HTTP routes use. The HTTP application is handed in by the
caller (`bridge.http.app.build_app` from the CLI), so the runtime never imports the UI above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.core.clock import MediaClock
from bridge.core.config import Config
from bridge.core.deadline import UnwaitedExecutor, off_loop, unless_stopped
from bridge.core.errors import UserError
from bridge.core.fanout import Broadcast
from bridge.core.interfaces import AudioChunk, ControlEvent, ControlSurface, FrameSink, VideoFrame
from bridge.core.stats import PipelineStats
from bridge.runtime import build
from bridge.runtime.pipeline import Pipeline

if TYPE_CHECKING:
    from aiohttp import web

    from bridge.core.interfaces import OutputProbe
    from drivers.audio.webrtc_in import RemoteAudioInbox
    from drivers.output.passthrough import AudioPassthrough
    from drivers.output.virtual_mic import VirtualMic

log = logging.getLogger(__name__)

HttpApp = Callable[["Daemon"], "web.Application"]


class Daemon:
    """Owns the pipeline and every network-facing part. One per process."""

    def __init__(
        self,
        config: Config,
        duration: float | None = None,
        record: Path | None = None,
        live: bool | None = None,
        progress: Callable[[str], None] | None = None,
        http_app: HttpApp | None = None,
    ) -> None:
        say = progress or (lambda _msg: None)
        if record is not None:
            config.outputs.record.path = record
        self._config = config
        self._clock = MediaClock(config.video.fps)
        self._stats = PipelineStats()
        self._http_app = http_app
        say(f"loading the {config.avatar.kind} avatar")
        self.avatar = build.avatar(config)
        say(f"starting the {config.face.driver} face driver")
        self.face_driver = build.face_driver(config, self.avatar)
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
        self._surfaces: list[ControlSurface] = []
        self._passthrough: AudioPassthrough | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = False
        self.http_port: int | None = None
        self._stop_event: asyncio.Event | None = None
        self._http_runner: web.AppRunner | None = None
        self._virtual_mic: VirtualMic | None = None  # when outputs.passthrough.create

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
        return self._surfaces

    @property
    def avatar_name(self) -> str:
        return self.avatar.name

    @property
    def audio_source_name(self) -> str:
        return self.audio_source.name

    def surface(self, name: str) -> ControlSurface | None:
        return next((s for s in self._surfaces if s.name == name), None)

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

    def request_stop(self) -> None:
        """Thread-safe: ask `serve()` to shut down."""
        if self.loop is not None and self._stop_event is not None:
            self.loop.call_soon_threadsafe(self._stop_event.set)

    # --- running ---------------------------------------------------------------------------------------

    async def _start_http(self) -> None:
        if not self.config.http.enabled or self._http_app is None:
            return
        from aiohttp import web

        # Connections that do not finish a request within http.idle_timeout_s are closed (slow clients that
        # trickle their headers, and idle keep-alive ones). No access log: URLs and headers stay out of logs.
        runner = web.AppRunner(self._http_app(self), handle_signals=False, access_log=None,
                               keepalive_timeout=self.config.http.idle_timeout_s)
        await runner.setup()
        site = web.TCPSite(runner, self.config.http.host, self.config.http.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UserError(
                f"cannot serve HTTP on {self.config.http.host}:{self.config.http.port} ({exc.strerror}); "
                "another program uses that port: set http.port to a free one (0 picks any), or stop the other daemon"
            ) from exc
        self._http_runner = runner
        bound = [addr for addr in runner.addresses if isinstance(addr, tuple)]
        self.http_port = int(bound[0][1]) if bound else self.config.http.port

    async def _start_controls(self) -> None:
        for surface in build.control_surfaces(self.config, self.mixer):
            try:
                await surface.start(self.emit_control)
                self._surfaces.append(surface)
            except UserError as exc:
                log.warning("control input %s is off: %s", surface.name, exc)

    async def serve(self, ready: Callable[[Daemon], None] | None = None) -> int:
        """Run until stopped; returns a process exit code."""
        self.loop = asyncio.get_running_loop()
        self.loop.set_default_executor(UnwaitedExecutor())  # a call stuck on a hung device never holds the exit
        self._stop_event = asyncio.Event()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.add_signal_handler(sig, self._stop_event.set)
                installed.append(sig)
        if hasattr(signal, "SIGUSR1"):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.add_signal_handler(signal.SIGUSR1, lambda: print(self.stats.report(), file=sys.stderr))
                installed.append(signal.SIGUSR1)
        self.pipeline.on_finished = self.request_stop
        try:
            await self._start_http()
            await self._start_controls()
            for sink in self._initial_sinks:
                self.pipeline.add_sink(sink)
            # What startup made (models, modules, config) lives as long as the daemon: out of the collector's
            # sight, a full collection during the stream walks only what the stream makes, a shorter pause.
            gc.collect()
            gc.freeze()
            self.pipeline.start()
            # The sound server may be slow or hung: a stop request during these is obeyed at once.
            if self.config.outputs.passthrough.create:
                try:
                    await unless_stopped(self._stop_event, self._create_virtual_mic, "making the virtual microphone")
                except UserError as exc:
                    log.warning("the virtual microphone is off: %s", exc)
            if self.config.outputs.passthrough.enabled and not self._stop_event.is_set():
                device = self.config.outputs.passthrough.device
                try:
                    await unless_stopped(self._stop_event, lambda: self.set_audio_output(device), "opening the voice output")
                except UserError as exc:
                    log.warning("delayed audio passthrough is off: %s", exc)
            self.running = True
            if ready is not None:
                ready(self)
            await self._stop_event.wait()
        finally:
            self.running = False
            await self.shutdown()
            gc.unfreeze()
            for sig in installed:
                with contextlib.suppress(Exception):
                    self.loop.remove_signal_handler(sig)
        if self.pipeline.error is not None:
            raise self.pipeline.error
        return 0

    async def shutdown(self) -> None:
        """Stop everything at once, in about 1.5 s at most: the pipeline and its outputs (a recording is
        finalised), the control surfaces and the HTTP server (with its WebRTC viewers) in parallel, each with a
        bound, so a stuck part (a render that takes seconds, a hung peer) cannot hold the exit."""

        async def bounded(what: Any, seconds: float) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(what, seconds)

        surfaces, self._surfaces = self._surfaces, []
        passthrough, self._passthrough = self._passthrough, None
        mic, self._virtual_mic = self._virtual_mic, None
        runner, self._http_runner = self._http_runner, None

        async def audio_out() -> None:  # the delayed voice stops before the virtual microphone it plays into goes
            fix = "the sound server may be hung"
            if passthrough is not None:
                await off_loop(passthrough.stop, 1.5, "stopping the delayed voice", fix)
            if mic is not None:
                await off_loop(mic.remove, 1.5, "removing the virtual microphone", fix)

        await asyncio.gather(
            off_loop(lambda: self.pipeline.stop(1.5), 2.0, "stopping the pipeline", "see the log"),
            *(bounded(surface.stop(), 0.5) for surface in surfaces),
            bounded(audio_out(), 1.5),
            *([bounded(runner.cleanup(), 1.0)] if runner is not None else []),
            return_exceptions=True,
        )
        with contextlib.suppress(Exception):
            await self._remote_audio.close()
        with contextlib.suppress(Exception):
            self.avatar.close()

    def health(self) -> dict[str, Any]:
        """The watchdog's view (see bridge.runtime.watchdog): ok, and which stages stalled since when."""
        report = self.pipeline.watchdog.report()
        return {"running": self.running, **report}
