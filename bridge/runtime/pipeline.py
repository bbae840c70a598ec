"""The media pipeline: audio → face driver → mixer → avatar → sinks, on one media clock.

Threads: `audio` reads the source and forwards audio; `face` runs the face driver ahead of time into a
timeline of parameters; `clock` ticks at the frame rate, picks the parameters for each frame, mixes in
controls and hands a job to `render` through a queue of `render_queue` jobs that drops the oldest when the
renderer is late. The tick comes `render_lead` (the recent render time, at most one frame period) before
the frame is due, so the frame is ready when it is due. Presentation time = audio capture time + `av_delay`, for video and audio alike, so sinks
keep lips and voice in sync by pts alone.

In live mode the clock follows wall time and late work is dropped, and the clock alone decides when the run
ends: at the end of `duration` (or of the speech) it waits one frame period for the frame in flight and
finishes, however long a starved renderer still takes. In offline mode (a file source that is not paced)
nothing is dropped: each stage waits for the previous one, and the run is as fast as the slowest.

Every stage beats a `Watchdog` as it hands work on, so `/health` can name a stage that stalled. A frame done
more than half a period after its pts counts as late, and the most recent late ones are kept (`late_frames`)
with where their time went: a late hand-over by the clock, the wait for the render in flight, or the render.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bridge.core.clock import MediaClock
from bridge.core.errors import UserError
from bridge.core.face_params import FaceParams
from bridge.core.fanout import Broadcast
from bridge.core.interfaces import (
    AudioChunk,
    AudioSource,
    Avatar,
    FaceDriver,
    FrameSink,
    RenderedImage,
    StreamInfo,
    VideoFrame,
)
from bridge.core.stats import PipelineStats
from bridge.runtime.sinks import SinkRunner
from bridge.runtime.watchdog import Watchdog

log = logging.getLogger(__name__)

RESYNC_S = 0.05  # capture-time jitter below this is absorbed; above it the timeline resyncs
MAX_GAP_S = 5.0  # a longer dropout is filled with this much silence only
LATE_PERIODS = 0.5  # a frame rendered this many frame periods after its presentation time missed its slot


class ParamsMixer(Protocol):
    def mix(self, driven: FaceParams, now: float) -> FaceParams: ...


class ParamsTimeline:
    """Face parameters by frame index, written by the face thread and read by the clock thread."""

    def __init__(self, keep: int = 256) -> None:
        self._frames: dict[int, FaceParams] = {}
        self._cond = threading.Condition()
        self._keep = keep
        self.next_index = 0  # frames below this are known
        self.consumed = 0  # the clock has taken frames below this
        self.ended = False

    def wait_for_room(self, stop: threading.Event) -> None:
        """Offline mode: hold the producer while it is half the buffer ahead of the consumer."""
        with self._cond:
            while self.next_index - self.consumed > self._keep // 2 and not stop.is_set() and not self.ended:
                self._cond.wait(0.1)

    def extend(self, frames: list[FaceParams]) -> None:
        with self._cond:
            for params in frames:
                self._frames[self.next_index] = params
                self.next_index += 1
            for stale in [k for k in self._frames if k < self.next_index - self._keep]:
                del self._frames[stale]
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def get(self, index: int, timeout: float | None) -> FaceParams | None:
        """Frame `index`, waiting up to `timeout` (None: until it exists or the stream ends)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while index not in self._frames and index >= self.next_index and not self.ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining if remaining is not None else 0.5)
            self.consumed = max(self.consumed, index + 1)
            self._cond.notify_all()
            return self._frames.get(index)

    def is_past_end(self, index: int) -> bool:
        with self._cond:
            return self.ended and index >= self.next_index


@dataclass
class RenderJob:
    index: int
    pts: float
    params: FaceParams
    tick: float  # when the clock meant to hand it over (media time)
    handed: float  # when it did


@dataclass(frozen=True)
class LateFrame:
    """Where the time of a frame that missed its slot went (seconds): how late the clock handed it over, how
    long it waited for the renderer, how long the render took, and how far past its pts it was done."""

    index: int
    tick_late: float
    waited: float
    render: float
    late: float


class Pipeline:
    def __init__(
        self,
        clock: MediaClock,
        source: AudioSource,
        driver: FaceDriver,
        avatar: Avatar,
        stats: PipelineStats | None = None,
        mixer: ParamsMixer | None = None,
        live: bool = True,
        duration: float | None = None,
        render_queue: int = 2,
        sink_queue: int = 3,
        av_delay: float | None = None,
        margin: float = 0.06,
    ) -> None:
        self.clock = clock
        self.fps = clock.fps
        self.source = source
        self.driver = driver
        self.avatar = avatar
        self.stats = stats or PipelineStats()
        self.mixer = mixer
        self.live = live
        self.duration = duration
        self.sink_queue = sink_queue
        chunk_time = 0.02
        self.av_delay = av_delay if av_delay is not None else driver.latency + chunk_time + margin
        # Parameters are ready `slack` before their presentation time; the clock hands a frame to the renderer
        # as early as its recent render time (at most one frame period, within that slack), so the frame is done
        # when it is due: neither a render late nor, on a fast GPU, long before its audio.
        slack = self.av_delay - driver.latency - chunk_time
        self.max_render_lead = max(0.0, min(1.0 / self.fps, 0.75 * slack))
        # Moving average of the avatar's render time (seconds). It starts at the most the lead allows: the first
        # renders of a stream are the slow ones (threads, caches and GPU work starting), so they start early.
        self._render_time = self.max_render_lead
        self.late_frames: collections.deque[LateFrame] = collections.deque(maxlen=32)  # the most recent ones
        self._rendering = False  # the render thread is inside avatar.render
        self.frames: Broadcast[VideoFrame] = Broadcast()
        self.audio_in: Broadcast[AudioChunk] = Broadcast()
        self.audio_out: Broadcast[AudioChunk] = Broadcast()
        self.info = StreamInfo(avatar.width, avatar.height, self.fps)
        self.timeline = ParamsTimeline()
        self._jobs: queue.Queue[RenderJob] = queue.Queue(maxsize=render_queue)
        self._clock_done = threading.Event()  # no job will follow those queued
        self._finish_lock = threading.Lock()
        self.watchdog = Watchdog()
        self._face_queue: collections.deque[AudioChunk | None] = collections.deque(maxlen=2000)
        self._face_cond = threading.Condition()
        self._runners: list[SinkRunner] = []
        self._runners_lock = threading.Lock()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._origin_ready = threading.Event()
        self.audio_origin = 0.0
        self.audio_end: float | None = None  # capture time where the source's audio ended (a file ran out)
        self.frames_rendered = 0
        self.last_frame: VideoFrame | None = None
        self.error: BaseException | None = None
        self.on_finished: Callable[[], object] | None = None
        self._threads: list[threading.Thread] = []
        self.muted = False  # the face driver and the outputs get silence instead of the input
        self.frozen = False  # the last frame is shown again instead of rendering new ones
        self._source_lock = threading.Lock()

    # --- sinks -------------------------------------------------------------------------------------------

    def add_sink(self, sink: FrameSink) -> SinkRunner:
        runner = SinkRunner(sink, self.info, self.stats, video_queue=self.sink_queue, now=self.clock.now,
                            watchdog=self.watchdog)
        runner.start()
        with self._runners_lock:
            self._runners.append(runner)
        return runner

    def remove_sink(self, sink: FrameSink, timeout: float = 5.0) -> None:
        """Blocking: let `sink` write what is queued and close it (waiting at most `timeout` s)."""
        with self._runners_lock:
            runners = [r for r in self._runners if r.sink is sink]
            self._runners = [r for r in self._runners if r.sink is not sink]
        for runner in runners:
            runner.close(timeout)
            self.watchdog.forget(runner.stage)

    @property
    def sinks(self) -> list[SinkRunner]:
        with self._runners_lock:
            return list(self._runners)

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def render_lead(self) -> float:
        """How long before a frame is due the clock hands it to the renderer: the recent render time with a
        little headroom, capped by `max_render_lead`."""
        return min(self.max_render_lead, 1.25 * self._render_time + 0.002)

    def late_within(self, seconds: float) -> bool:
        """Whether a frame missed its slot in the last `seconds` of the stream."""
        late = self.late_frames
        if not late:
            return False
        now_index = (self.clock.now() - self.stream_origin) * self.fps
        return late[-1].index >= now_index - seconds * self.fps

    @property
    def stream_origin(self) -> float:
        """Presentation time of frame 0."""
        return self.audio_origin + self.av_delay

    def start(self) -> None:
        self.watchdog.start()
        self.source.start(self.clock.now)
        for name, target in (("audio", self._audio_loop), ("face", self._face_loop), ("clock", self._clock_loop),
                             ("render", self._render_loop)):
            thread = threading.Thread(target=self._guard(target), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except UserError as exc:  # the input's fault (a damaged audio file): one line, no traceback
                log.error("pipeline thread %s stopped: %s", threading.current_thread().name, exc)
                self.error = exc
                self._finish()
            except BaseException as exc:
                log.exception("pipeline thread %s failed", threading.current_thread().name)
                self.error = exc
                self._finish()

        return run

    def _finish(self) -> None:
        with self._finish_lock:
            if self.finished.is_set():
                return
            self.finished.set()
        self.watchdog.stop()
        if self.on_finished is not None:
            self.on_finished()

    def replace_source(self, source: AudioSource) -> None:
        """Switch audio input while running; the new source continues the same timeline."""
        source.start(self.clock.now)
        with self._source_lock:
            old, self.source = self.source, source
        old.stop()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop every thread and finish the outputs (a recording is finalised); returns within `timeout`
        seconds even when a render or a sink is stuck (its thread is left to end by itself)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.watchdog.stop()
        with self._face_cond:
            self._face_cond.notify_all()
        self.timeline.end()
        self.source.stop()
        runners = self.sinks
        for runner in runners:  # all outputs finish at once, while the threads below wind down
            runner.request_close()
        render = [t for t in self._threads if t.name == "render"]
        for thread in self._threads:
            if thread not in render:
                thread.join(max(0.0, deadline - time.monotonic()))
        for runner in runners:
            runner.close(timeout=max(0.0, deadline - time.monotonic()))
        for thread in render:  # a render in progress shows nothing any more: no reason to wait for it
            thread.join(min(0.05 if self._rendering else 0.2, max(0.0, deadline - time.monotonic())))
        self.frames.close()
        self.audio_in.close()
        self.audio_out.close()
        self._finish()

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    # --- threads -----------------------------------------------------------------------------------------

    def _audio_loop(self) -> None:
        first = True
        expected = 0.0  # media time where the next chunk should start
        while not self._stop.is_set():
            with self._source_lock:
                source = self.source
            chunk = source.read(timeout=0.1)
            if chunk is None:
                if source.error is not None:
                    raise source.error
                if source.finished and source is self.source:
                    self.watchdog.done("audio")
                    if not first:
                        self.audio_end = expected
                    break
                continue
            if first:
                self.audio_origin = chunk.pts
                self.info.extra["origin"] = self.stream_origin
                self._origin_ready.set()
                first = False
                expected = chunk.pts
            for piece in self._contiguous(chunk, expected):
                expected = piece.end_pts
                self._forward(piece)
        with self._face_cond:
            self._face_queue.append(None)
            self._face_cond.notify()
        if first:  # the source ended without any audio
            self.audio_origin = self.clock.now()
            self._origin_ready.set()

    def _contiguous(self, chunk: AudioChunk, expected: float) -> list[AudioChunk]:
        """Keep the audio timeline gapless: the face driver counts samples, so a dropout (a device
        reconnecting, a source switch) becomes silence, and capture-time jitter is absorbed."""
        drift = chunk.pts - expected
        if abs(drift) <= RESYNC_S:
            return [AudioChunk(chunk.samples, expected, chunk.sample_rate)]
        if drift > 0:
            gap = np.zeros(int(round(min(drift, MAX_GAP_S) * chunk.sample_rate)), np.float32)
            self.stats.incr("audio_gaps")
            filled = AudioChunk(gap, expected, chunk.sample_rate)
            return [filled, AudioChunk(chunk.samples, filled.end_pts, chunk.sample_rate)]
        skip = int(round(-drift * chunk.sample_rate))  # overlaps audio already delivered
        rest = chunk.samples[skip:]
        return [AudioChunk(rest, expected, chunk.sample_rate)] if rest.size else []

    def _forward(self, chunk: AudioChunk) -> None:
        self.watchdog.beat("audio")
        if self.muted:
            chunk = AudioChunk(np.zeros_like(chunk.samples), chunk.pts, chunk.sample_rate)
        self.audio_in.publish(chunk)
        shifted = AudioChunk(chunk.samples, chunk.pts + self.av_delay, chunk.sample_rate)
        self.audio_out.publish(shifted)
        for runner in self.sinks:
            runner.put_audio(shifted)
        with self._face_cond:
            if len(self._face_queue) == self._face_queue.maxlen:
                self.stats.drop("face")
            self._face_queue.append(chunk)
            self._face_cond.notify()
        if not self.live:
            self._wait_face_backlog()

    def _wait_face_backlog(self) -> None:
        """Offline mode: keep at most about a second of audio ahead of the face driver."""
        with self._face_cond:
            while len(self._face_queue) > 50 and not self._stop.is_set():
                self._face_cond.wait(0.1)

    def _face_loop(self) -> None:
        started = False
        while not self._stop.is_set():
            with self._face_cond:
                while not self._face_queue and not self._stop.is_set():
                    self._face_cond.wait(0.1)
                if self._stop.is_set():
                    return
                chunk = self._face_queue.popleft()
                self._face_cond.notify_all()
            if chunk is None:
                self.timeline.extend(self.driver.flush())
                self.timeline.end()
                self.watchdog.done("face")
                return
            if not started:
                self.driver.reset(chunk.pts)
                started = True
            if not self.live:
                self.timeline.wait_for_room(self._stop)
            t0 = time.perf_counter()
            frames = self.driver.push(chunk)
            if frames:
                self.stats.time("face", time.perf_counter() - t0)
                self.watchdog.beat("face")
            self.timeline.extend(frames)

    def _clock_loop(self) -> None:
        while not self._origin_ready.wait(0.1):
            if self._stop.is_set():
                return
        frame_dt = 1.0 / self.fps
        held = FaceParams.neutral()
        index = 0
        while not self._stop.is_set():
            self.watchdog.beat("clock")
            if self.duration is not None and index >= round(self.duration * self.fps):
                break
            if self.duration is None and (self.timeline.is_past_end(index) or index >= self._frames_of_audio()):
                break  # the speech is over (its last frame is known, or the face driver has not caught up yet)
            pts = self.stream_origin + index * frame_dt
            start = pts  # when the job is due at the renderer
            if self.live:
                start = pts - self.render_lead
                if not self.clock.sleep_until(start, self._stop):
                    return
                behind = int((self.clock.now() - start) / frame_dt)
                if behind >= 2:  # the machine stalled: skip to the present instead of rendering the past
                    self.stats.drop("clock", behind)
                    index += behind
                    continue
                params = self.timeline.get(index, timeout=0.0)
            else:
                params = self.timeline.get(index, timeout=None)
                if params is None and self.duration is None and self.timeline.is_past_end(index):
                    break  # the face thread ended the speech while this frame was awaited
            if params is None:
                if not self.timeline.is_past_end(index):
                    self.stats.incr("face_late")
                params = held.copy(pts=pts, audio_time=None)
            held = params
            t0 = time.perf_counter()
            mixed = self.mixer.mix(params, pts) if self.mixer is not None else params
            self.stats.time("mix", time.perf_counter() - t0)
            mixed = mixed.copy(pts=pts, audio_time=params.audio_time)
            self._submit(RenderJob(index, pts, mixed, tick=start, handed=self.clock.now()))
            index += 1
        end = self.stream_origin + index * frame_dt
        # Sinks read the stream's end from their StreamInfo: a recorder fills the slots up to it with the last
        # picture, so a recording is as long as the run even when the last renders never came.
        self.info.extra["end"] = end
        self._clock_done.set()
        self.watchdog.done("clock")
        # Live, the clock ends the run: the last frame's slot closes one period after it was due. The frame in
        # flight gets until then; a renderer that is still busy (starved, stuck) does not hold the end.
        if self.live and not self._stop.is_set() and self.clock.sleep_until(end, self._stop):
            self._finish()

    def _frames_of_audio(self) -> float:
        """Frames the source's audio covers once it ended (infinite while it goes on). The source may say where
        it ends (`end_pts`, a file once its last chunk is queued) before the audio thread has read that far."""
        end = self.audio_end if self.audio_end is not None else self.source.end_pts
        if end is None or not self._origin_ready.is_set():
            return math.inf
        return math.ceil((end - self.audio_origin) * self.fps - 1e-6)

    def _submit(self, job: RenderJob) -> None:
        if not self.live:
            while not self._stop.is_set():
                try:
                    self._jobs.put(job, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            try:  # drop the oldest waiting job: the newest frame is the one worth showing
                self._jobs.get_nowait()
                self.stats.drop("render")
            except queue.Empty:
                pass
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                self.stats.drop("render")

    def _next_job(self) -> RenderJob | None:
        """The job to render now (None when none came within 0.1 s). In live mode a job that is already due
        gives way to a newer one waiting behind it (counted as a render drop): rendering it would make both
        late."""
        try:
            job = self._jobs.get(timeout=0.1)
        except queue.Empty:
            return None
        while self.live and self.clock.now() > job.pts:
            try:
                newer = self._jobs.get_nowait()
            except queue.Empty:
                break
            self.stats.drop("render")
            job = newer
        return job

    def _render_loop(self) -> None:
        while not self._stop.is_set():
            job = self._next_job()
            if job is None:
                if self._clock_done.is_set() and self._jobs.empty():
                    break  # every job the clock made is rendered
                continue
            started = self.clock.now()
            t0 = time.perf_counter()
            took = 0.0
            if self.frozen and self.last_frame is not None:
                image = RenderedImage(self.last_frame.rgb, self.last_frame.alpha,
                                      foreground=self.last_frame.foreground)
            else:
                self._rendering = True
                try:
                    image = self.avatar.render(job.params)
                finally:
                    self._rendering = False
                took = time.perf_counter() - t0
                self.stats.time("render", took)
                self._render_time = 0.9 * self._render_time + 0.1 * took
            if self._stop.is_set():
                break  # the outputs are closing: a render that outlived the run is not shown
            frame = VideoFrame(
                rgb=image.rgb,
                pts=job.pts,
                index=job.index,
                alpha=image.alpha,
                foreground=image.foreground,
                audio_time=job.params.audio_time,
                params=job.params,
                rendered_at=self.clock.now(),
            )
            if self.live and frame.rendered_at > job.pts + LATE_PERIODS / self.fps:
                self.stats.incr("frames_late")
                self.late_frames.append(LateFrame(job.index, job.handed - job.tick, started - job.handed, took,
                                                  frame.rendered_at - job.pts))
            self.frames_rendered += 1
            self.last_frame = frame
            self.watchdog.beat("render")
            self.frames.publish(frame)
            for runner in self.sinks:
                runner.put_video(frame)
        if self._clock_done.is_set():
            self.watchdog.done("render")
        self._finish()
