"""The daemon: the process host of the sessions. It builds the default session (the single avatar of an
ordinary run) and the config's fixed ones, creates and ends more on request within its capacity, and serves
HTTP, OSC, VMC and MIDI for all of them on one asyncio loop until stopped (SIGINT/SIGTERM, the end of the
default session's file, or a duration).

A session (`bridge.runtime.session.Session`) is the unit that serves one avatar; the host holds what a
process has once: the HTTP server, the control surfaces (OSC routes `/avatar/<session>/…` by name), the
registry with admission (`bridge.runtime.sessions`), the model cache every session's drivers get their
weights from (`bridge.core.models`), and the thread sessions are built in. The HTTP
application is handed in by the caller (`bridge.http.app.build_app` from the CLI), so the runtime never
imports the UI above it. For the single-avatar routes the host is also a `MediaHub`: every such call goes to
the default session.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.core.clock import MediaClock
from bridge.core.config import Config, SessionSpec
from bridge.core.deadline import UnwaitedExecutor, unless_stopped
from bridge.core.errors import UserError
from bridge.core.fanout import Broadcast
from bridge.core.interfaces import AudioChunk, ControlEvent, ControlSurface, FrameSink, VideoFrame
from bridge.core.models import ModelCache, process_models
from bridge.core.stats import PipelineStats
from bridge.runtime import build
from bridge.runtime.pipeline import Pipeline
from bridge.runtime.recordings import Recorders
from bridge.runtime.session import Session
from bridge.runtime.sessions import DEFAULT, SessionRegistry, new_id, session_config, valid_name

if TYPE_CHECKING:
    from aiohttp import web

    from bridge.controls.mixer import Mixer
    from bridge.core.alpha_demand import AlphaDemand
    from bridge.core.interfaces import AudioSource, Avatar, FaceDriver, OutputProbe
    from drivers.audio.webrtc_in import RemoteAudioInbox
    from drivers.avatar.scene.control import BackgroundTable
    from drivers.output.passthrough import AudioPassthrough
    from drivers.output.virtual_mic import VirtualMic

log = logging.getLogger(__name__)

HttpApp = Callable[["Daemon"], "web.Application"]
BUILD_TIMEOUT_S = 120.0  # a session whose models have not loaded by then is given up


def _close_abandoned(built: asyncio.Future[Session]) -> None:
    """A session that finished loading after its creation was given up: free its models, take its face
    driver out of the hop batcher it joined, and let its recording (which got no frame: no file) go."""
    if not built.cancelled() and built.exception() is None:
        session = built.result()
        for close in (lambda: session.stop_recording(0.0), session.avatar.close, session.face_driver.close):
            with contextlib.suppress(Exception):
                close()


class Daemon:
    """Hosts the sessions and every network-facing part. One per process."""

    def __init__(
        self,
        config: Config,
        duration: float | None = None,
        record: Path | None = None,
        live: bool | None = None,
        progress: Callable[[str], None] | None = None,
        http_app: HttpApp | None = None,
    ) -> None:
        if record is not None:
            config.outputs.record.path = record
        self._config = config
        self._http_app = http_app
        self.sessions = SessionRegistry(config)
        self.recordings = Recorders(config, self.sessions)
        self.models: ModelCache = process_models()  # every session's weights: loaded once per process
        self.session = Session(DEFAULT, config, models=self.models, duration=duration, live=live,
                               surfaces=self._control_surfaces, progress=progress)
        for spec in config.sessions.fixed:  # a fixed session the config cannot run is an error at start
            session_config(config, spec, str(spec.name))
        self._surfaces: list[ControlSurface] = []
        # Sessions are built here, one at a time (models load for seconds): never on the loop, and a burst of
        # creations waits its turn within the capacity instead of loading side by side.
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-build")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = False
        self.http_port: int | None = None
        self._stop_event: asyncio.Event | None = None
        self._http_runner: web.AppRunner | None = None
        self._ending: set[asyncio.Task[bool]] = set()

    def _control_surfaces(self) -> list[ControlSurface]:
        return self._surfaces

    # --- sessions -------------------------------------------------------------------------------------------

    def has_session(self, name: str) -> bool:
        """SessionScope: whether `name` is one of this daemon's sessions (as OSC addresses it)."""
        return name in self.sessions

    def control_state(self, session: str) -> dict[str, Any]:
        found = self.sessions.get(session) if session else self.session
        return found.mixer.state() if found is not None else {}

    def background_control(self, session: str) -> BackgroundTable | None:
        """SessionScope: the backgrounds of `session` ("" the default one), None when it has ended."""
        found = self.sessions.get(session) if session else self.session
        return found.backgrounds if found is not None else None

    async def create_session(self, spec: SessionSpec, name: str | None = None, fixed: bool = False) -> Session:
        """Build and start a session from `spec` within the capacity; raises SessionsFull (no room now) or
        UserError (settings it cannot run with, or models that fail to load). The build runs off the loop."""
        loop = asyncio.get_running_loop()
        name = name or new_id()
        if not valid_name(name):
            raise UserError(f"{name!r} cannot name a session: it must be 1 to 64 lower-case letters, digits, '_' "
                            "or '-', and not a control word like 'blend' or 'preset'")
        if name in self.sessions:
            raise UserError(f"a session named {name!r} already runs; choose another name")
        config = session_config(self._config, spec, name)
        record = bool(spec.record)
        if record:
            self.recordings.claim(name)  # the limit of recordings refuses before anything is built
        try:
            self.sessions.reserve()
        except UserError:
            self.recordings.unclaim(name)
            raise
        try:
            built = loop.run_in_executor(self._builder, self._build, name, config, fixed, record)
            try:
                session = await asyncio.wait_for(asyncio.shield(built), BUILD_TIMEOUT_S)
            except TimeoutError:
                built.add_done_callback(_close_abandoned)
                raise UserError(f"session {name!r} did not load within {BUILD_TIMEOUT_S:.0f} s; check the models' "
                                "files and the machine's load, then try again") from None
            await session.start(on_finished=lambda: loop.call_soon_threadsafe(self._session_finished, name))
            self.sessions.add(session)
        finally:
            self.sessions.release()
            self.recordings.unclaim(name)
        log.info("session %s started (%s avatar, %s face driver, %s audio)", name[:8], config.avatar.kind,
                 config.face.driver, config.audio.source)
        return session

    def _build(self, name: str, config: Config, fixed: bool, record: bool) -> Session:
        """Blocking: load the session's models and, when the daemon serves HTTP, its WebRTC viewers; make its
        recording's file first when it records (a folder it cannot write refuses it before models load)."""
        recorder = self.recordings.new_sink(name) if record else None
        session = Session(name, config, models=self.models, surfaces=self._control_surfaces, fixed=fixed)
        if self._serves_http:
            session.open_viewers()
        if recorder is not None:
            session.record(recorder)
        return session

    async def end_session(self, name: str) -> bool:
        """Stop a session other than the default one and forget it, its recording finalised (a playable file);
        False when there is no such session."""
        if name == DEFAULT:
            raise UserError("the default session ends with the daemon; stop the daemon instead")
        session = self.sessions.remove(name)
        if session is None:
            return False
        await session.stop()
        with contextlib.suppress(UserError):  # a disk that hangs: the file is finished later, or cut back
            await self.recordings.stop(session)
        if session.pipeline.error is not None:
            log.warning("session %s ended by an error: %s", name[:8], session.pipeline.error)
        else:
            log.info("session %s ended", name[:8])
        return True

    def _session_finished(self, name: str) -> None:
        """A session's stream ended by itself: the default one stops the daemon, another one is ended."""
        if name == DEFAULT:
            self.request_stop()
            return
        task = asyncio.get_running_loop().create_task(self.end_session(name))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    # --- MediaHub of the default session: what the single-avatar routes and outputs use --------------------

    @property
    def config(self) -> Config:
        return self.session.config

    @property
    def clock(self) -> MediaClock:
        return self.session.clock

    @property
    def stats(self) -> PipelineStats:
        return self.session.stats

    @property
    def pipeline(self) -> Pipeline:
        return self.session.pipeline

    @property
    def mixer(self) -> Mixer:
        return self.session.mixer

    @property
    def avatar(self) -> Avatar:
        return self.session.avatar

    @property
    def face_driver(self) -> FaceDriver:
        return self.session.face_driver

    @property
    def audio_source(self) -> AudioSource:
        return self.session.audio_source

    @property
    def frames(self) -> Broadcast[VideoFrame]:
        return self.session.frames

    @property
    def audio_out(self) -> Broadcast[AudioChunk]:
        return self.session.audio_out

    @property
    def audio_in(self) -> Broadcast[AudioChunk]:
        return self.session.audio_in

    @property
    def av_delay(self) -> float:
        return self.session.av_delay

    @property
    def remote_audio(self) -> RemoteAudioInbox:
        return self.session.remote_audio

    @property
    def passthrough(self) -> AudioPassthrough | None:
        return self.session.passthrough

    @property
    def virtual_mic(self) -> VirtualMic | None:
        return self.session.virtual_mic

    @property
    def control_surfaces(self) -> list[ControlSurface]:
        return self._surfaces

    @property
    def alpha_demand(self) -> AlphaDemand:
        return self.session.alpha_demand

    @property
    def backgrounds(self) -> BackgroundTable:
        return self.session.backgrounds

    @property
    def avatar_name(self) -> str:
        return self.session.avatar_name

    @property
    def audio_source_name(self) -> str:
        return self.session.audio_source_name

    def surface(self, name: str) -> ControlSurface | None:
        return next((s for s in self._surfaces if s.name == name), None)

    def add_sink(self, sink: FrameSink) -> None:
        self.session.add_sink(sink)

    def remove_sink(self, sink: FrameSink) -> None:
        self.session.remove_sink(sink)

    def follow_output(self, stage: str, probe: OutputProbe) -> None:
        self.session.follow_output(stage, probe)

    def forget_output(self, stage: str) -> None:
        self.session.forget_output(stage)

    def output_failures(self) -> list[BaseException]:
        return self.session.output_failures()

    def emit_control(self, event: ControlEvent) -> bool:
        """Where the control surfaces hand events: to the session they name (the default one when none). A
        session that ended since the surface checked the name drops the event."""
        target = self.sessions.get(event.session) if event.session else self.session
        if target is None:
            self.session.stats.incr("control/unknown_session")
            return False
        return target.emit_control(event)

    @property
    def muted(self) -> bool:
        return self.session.muted

    def set_muted(self, value: bool) -> None:
        self.session.set_muted(value)

    @property
    def frozen(self) -> bool:
        return self.session.frozen

    def set_frozen(self, value: bool) -> None:
        self.session.set_frozen(value)

    def set_audio_source(self, source: str, device: str | int | None = None) -> None:
        self.session.set_audio_source(source, device)

    def set_audio_output(self, device: str | int | None) -> None:
        self.session.set_audio_output(device)

    def health(self) -> dict[str, Any]:
        """The default session's watchdog view, and how many sessions run."""
        return {**self.session.health(), "running": self.running, "sessions": len(self.sessions)}

    def request_stop(self) -> None:
        """Thread-safe: ask `serve()` to shut down."""
        if self.loop is not None and self._stop_event is not None:
            self.loop.call_soon_threadsafe(self._stop_event.set)

    # --- running ---------------------------------------------------------------------------------------

    @property
    def _serves_http(self) -> bool:
        return self._config.http.enabled and self._http_app is not None

    async def _start_http(self) -> None:
        if not self._serves_http or self._http_app is None:
            return
        from aiohttp import web

        # Connections that do not finish a request within http.idle_timeout_s are closed (slow clients that
        # trickle their headers, and idle keep-alive ones). No access log: URLs and headers stay out of logs.
        runner = web.AppRunner(self._http_app(self), handle_signals=False, access_log=None,
                               keepalive_timeout=self._config.http.idle_timeout_s)
        await runner.setup()
        site = web.TCPSite(runner, self._config.http.host, self._config.http.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UserError(
                f"cannot serve HTTP on {self._config.http.host}:{self._config.http.port} ({exc.strerror}); "
                "another program uses that port: set http.port to a free one (0 picks any), or stop the other daemon"
            ) from exc
        self._http_runner = runner
        bound = [addr for addr in runner.addresses if isinstance(addr, tuple)]
        self.http_port = int(bound[0][1]) if bound else self._config.http.port

    async def _start_controls(self) -> None:
        for surface in build.control_surfaces(self._config, self.session.mixer, self):
            try:
                await surface.start(self.emit_control)
                self._surfaces.append(surface)
            except UserError as exc:
                log.warning("control input %s is off: %s", surface.name, exc)

    async def _start_fixed(self) -> None:
        """The config's [[sessions.fixed]]: a failing one is named and the daemon runs without it."""
        for spec in self._config.sessions.fixed:
            try:
                await self.create_session(spec, name=spec.name, fixed=True)
            except UserError as exc:
                log.warning("session %s is off: %s", spec.name, exc)

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
        try:
            if self._serves_http:
                self.session.open_viewers()
            self.sessions.add(self.session)
            await self._start_http()
            await self._start_controls()
            # What startup made (models, modules, config) lives as long as the daemon: out of the collector's
            # sight, a full collection during the stream walks only what the stream makes, a shorter pause.
            gc.collect()
            gc.freeze()
            # The session's start may wait on a sound server that hangs: a stop request during it is obeyed at once.
            await unless_stopped(self._stop_event, self.session.start(on_finished=self.request_stop))
            if not self._stop_event.is_set():
                await self._start_fixed()
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
        if self.session.pipeline.error is not None:
            raise self.session.pipeline.error
        return 0

    async def shutdown(self) -> None:
        """Stop everything at once, in about 1.5 s at most: every session (its pipeline and outputs; a
        recording is finalised), the control surfaces and the HTTP server in parallel, each with a bound, so a
        stuck part (a render that takes seconds, a hung peer) cannot hold the exit."""

        async def bounded(what: Any, seconds: float) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(what, seconds)

        surfaces, self._surfaces = self._surfaces, []
        runner, self._http_runner = self._http_runner, None
        sessions = [self.session] + [s for s in self.sessions if s is not self.session]
        for session in sessions:
            self.sessions.remove(session.name)
        await asyncio.gather(
            *(session.stop() for session in sessions),
            *(bounded(surface.stop(), 0.5) for surface in surfaces),
            *([bounded(runner.cleanup(), 1.0)] if runner is not None else []),
            return_exceptions=True,
        )
        self._builder.shutdown(wait=False, cancel_futures=True)
