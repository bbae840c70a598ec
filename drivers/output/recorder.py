"""Records the stream to a file (H.264 + AAC in MP4 by default) with constant frame rate and audio in sync.

Frames are placed by their presentation time: a frame the pipeline dropped is filled by repeating the last
one, so the file always has one frame per slot and audio sample positions follow the same timeline.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import AudioChunk, StreamInfo, VideoFrame

log = logging.getLogger(__name__)

AAC_FRAME = 1024


class RecorderSink:
    name = "recorder"

    def __init__(self, path: Path | str, crf: int = 20, preset: str = "veryfast") -> None:
        self.path = Path(path)
        if not self.path.parent.exists():
            raise UserError(f"cannot record to {self.path}: folder {self.path.parent} does not exist")
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self.frames_repeated = 0
        self._container: Any = None
        self._origin: float | None = None
        self._last: VideoFrame | None = None
        self._audio_pending = np.zeros(0, np.float32)
        self._audio_samples = 0  # samples placed on the timeline so far
        self._audio_encoded = 0

    @classmethod
    def from_config(cls, config: Config) -> RecorderSink:
        r = config.outputs.record
        if r.path is None:
            raise UserError("outputs.record.path is not set: give the file to record to")
        return cls(r.path, crf=r.crf, preset=r.preset)

    def open(self, info: StreamInfo) -> None:
        self.info = info
        try:
            self._container = av.open(str(self.path), "w")
        except (av.error.FFmpegError, OSError) as exc:
            raise UserError(f"cannot create {self.path}: {exc}") from exc
        video = self._container.add_stream("libx264", rate=info.fps)
        video.width, video.height = info.width, info.height
        video.pix_fmt = "yuv420p"
        video.time_base = Fraction(1, info.fps)
        video.options = {"crf": str(self.crf), "preset": self.preset}
        self._video = video
        audio = self._container.add_stream("aac", rate=info.sample_rate)
        audio.layout = "mono"
        audio.time_base = Fraction(1, info.sample_rate)
        self._audio = audio
        origin = info.extra.get("origin")
        self._origin = float(origin) if isinstance(origin, (int, float)) else None

    def _slot(self, pts: float) -> int:
        assert self._origin is not None
        return round((pts - self._origin) * self.info.fps)

    def write_video(self, frame: VideoFrame) -> None:
        if self._origin is None:
            self._origin = frame.pts
        slot = self._slot(frame.pts)
        if slot < self.frames_written:
            return  # a late duplicate of a slot already filled
        while self._last is not None and self.frames_written < slot:
            self._encode(self._last)
            self.frames_repeated += 1
        self._encode(frame)
        self._last = frame

    def _encode(self, frame: VideoFrame) -> None:
        self._encode_video(frame)
        self._drain_audio(final=False)

    def _encode_video(self, frame: VideoFrame) -> None:
        rgb = frame.rgb
        if rgb.shape[0] != self.info.height or rgb.shape[1] != self.info.width:
            raise ValueError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, recorder opened at {self.info.width}x{self.info.height}")
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        out.pts = self.frames_written
        for packet in self._video.encode(out):
            self._container.mux(packet)
        self.frames_written += 1

    def write_audio(self, chunk: AudioChunk) -> None:
        if self._origin is None:
            return  # audio before the first frame is outside the recording
        start = round((chunk.pts - self._origin) * self.info.sample_rate)
        samples = np.asarray(chunk.samples, np.float32)
        if start < self._audio_samples:  # overlaps what is placed already, or precedes the origin
            samples = samples[self._audio_samples - start :]
        elif start > self._audio_samples:  # a gap: silence
            samples = np.concatenate([np.zeros(start - self._audio_samples, np.float32), samples])
        if samples.size:
            self._audio_pending = np.concatenate([self._audio_pending, samples])
            self._audio_samples += samples.size
        self._drain_audio(final=False)

    def _drain_audio(self, final: bool) -> None:
        # Encode audio only as far as the video has come, so the file never holds sound past its last frame.
        video_end = round(self.frames_written / self.info.fps * self.info.sample_rate)
        while (self._audio_pending.size >= AAC_FRAME and self._audio_encoded + AAC_FRAME <= video_end) or (
            final and self._audio_pending.size
        ):
            n = min(AAC_FRAME, self._audio_pending.size)
            block, self._audio_pending = self._audio_pending[:n], self._audio_pending[n:]
            out = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
            out.sample_rate = self.info.sample_rate
            out.pts = self._audio_encoded
            self._audio_encoded += n
            for packet in self._audio.encode(out):
                self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        try:
            # Audio ends with the video: pad with silence or cut what lies past the last frame.
            total = round(self.frames_written / self.info.fps * self.info.sample_rate)
            wanted = max(0, total - self._audio_encoded)
            pending = self._audio_pending[:wanted]
            if pending.size < wanted:
                pending = np.concatenate([pending, np.zeros(wanted - pending.size, np.float32)])
            self._audio_pending = pending
            self._audio_samples = total
            self._drain_audio(final=True)
            for packet in self._audio.encode(None):
                self._container.mux(packet)
            for packet in self._video.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
            log.info("recorded %d frames (%d repeated) to %s", self.frames_written, self.frames_repeated, self.path)
