"""Records the stream to a file with constant frame rate and audio in sync, written so that a crash keeps it.

Frames are placed by their presentation time: a frame the pipeline dropped is filled by repeating the last
one, so the file always has one frame per slot and audio sample positions follow the same timeline. The file
type follows the name (`record_formats`): MP4 or MKV with H.264, WebM (VP9) or MOV (ProRes 4444) with the
avatar's alpha. Each second is on disk once written; when the disk fills up, the file is cut back to the last
complete second (so it stays playable) and recording stops with a `RecordingFailed`.

The path must be a regular file (or not exist yet) in a writable folder: a FIFO, a device or a folder is
refused when the recorder is made, before the daemon runs. The file is opened by us without blocking (a FIFO
put there since is refused, not waited on) and handed to the muxer as a Python file, so every system call on
it releases the interpreter: a write to storage that hangs holds the sink's own thread, never the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import stat
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import AudioChunk, StreamInfo, VideoFrame
from drivers.output.record_formats import RecordFormat, format_for
from drivers.output.virtualcam import straight_rgba

log = logging.getLogger(__name__)

AAC_FRAME = 1024
AUDIO_LAG_S = 1.0  # audio missing this far behind the video is recorded as silence, so the file keeps growing
MAX_PENDING_S = 10.0  # audio held ahead of the video (before the first frame, or while the renderer stalls)
FULL_DISK = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class RecordingFailed(UserError):
    """The recording stopped before the end (full disk, file too large, storage gone)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def check_record_path(path: Path) -> None:
    """Refuse, before anything runs, a path a recording cannot go to: one that is not a regular file (a FIFO
    would block the open, a device would take the bytes), or whose folder is missing or not writable."""
    fix = "give the path of a new or existing regular file in a writable folder"
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"cannot record to {path}: it is {_kind(mode)}; {fix}")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"cannot record to {path}: folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot record to {path}: folder {folder} is not writable; {fix}")


def open_regular(path: Path) -> io.FileIO:
    """Create or truncate `path` for writing without ever waiting on the open (O_NONBLOCK: a FIFO without a
    reader fails at once), and only if what was opened is a regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise UserError(f"cannot create {path}: {exc.strerror or exc}; give the path of a regular file in a "
                        "writable folder") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"cannot record to {path}: it is {_kind(mode)}; give the path of a regular file")
        os.ftruncate(fd, 0)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return io.FileIO(fd, "r+", closefd=True)
    except BaseException:
        os.close(fd)
        raise


class RecorderSink:
    name = "recorder"

    def __init__(self, path: Path | str, crf: int = 20, preset: str = "veryfast") -> None:
        self.path = Path(path)
        check_record_path(self.path)
        self.format: RecordFormat = format_for(self.path)
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self.frames_repeated = 0
        self.alpha = False  # the file carries an alpha plane (decided by the first frame)
        self.failure: RecordingFailed | None = None
        self._container: Any = None
        self._file: io.FileIO | None = None
        self._video: Any = None
        self._audio: Any = None
        self._audio_block = AAC_FRAME
        self._origin: float | None = None
        self._last: VideoFrame | None = None
        self._audio_pending = np.zeros(0, np.float32)
        self._audio_samples = 0  # samples placed on the timeline so far
        self._audio_encoded = 0
        self._good_size = 0  # file size after the last complete write: where a failed write is cut back to

    @property
    def wants_alpha(self) -> bool:
        """A .webm or .mov file keeps the avatar's alpha: the daemon has the avatar produce it."""
        return self.format.keeps_alpha

    @classmethod
    def from_config(cls, config: Config) -> RecorderSink:
        r = config.outputs.record
        if r.path is None:
            raise UserError("outputs.record.path is not set: give the file to record to")
        return cls(r.path, crf=r.crf, preset=r.preset)

    def open(self, info: StreamInfo) -> None:
        self.info = info
        fmt = self.format
        self._file = open_regular(self.path)
        try:
            self._container = av.open(self._file, "w", format=fmt.container, options=dict(fmt.muxer_options))
        except (av.error.FFmpegError, OSError) as exc:
            self._file.close()
            raise UserError(f"cannot create {self.path}: {getattr(exc, 'strerror', None) or exc}; "
                            "check that the folder is writable") from exc
        origin = info.extra.get("origin")
        self._origin = float(origin) if isinstance(origin, (int, float)) else None

    def _add_streams(self, alpha: bool) -> None:
        """Streams are added with the first frame, which tells whether the avatar renders alpha."""
        fmt, info = self.format, self.info
        self.alpha = alpha and fmt.keeps_alpha
        video = self._container.add_stream(fmt.video_codec, rate=info.fps)
        video.width, video.height = info.width, info.height
        video.pix_fmt = fmt.alpha_pix_fmt if self.alpha else fmt.pix_fmt
        video.time_base = Fraction(1, info.fps)
        video.options = fmt.video_options(info.fps, self.crf, self.preset, self.alpha)
        self._video = video
        audio = self._container.add_stream(fmt.audio_codec, rate=info.sample_rate)
        audio.layout = "mono"
        audio.time_base = Fraction(1, info.sample_rate)
        audio.codec_context.open(strict=False)  # its frame size is known once open
        self._audio_block = audio.codec_context.frame_size or fmt.audio_block
        self._audio = audio

    def _slot(self, pts: float) -> int:
        assert self._origin is not None
        return round((pts - self._origin) * self.info.fps)

    def write_video(self, frame: VideoFrame) -> None:
        if self.failure is not None:
            return
        if self._origin is None:
            self._origin = frame.pts
        if self._video is None:
            self._add_streams(frame.alpha is not None)
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
        self._fill_silence()
        self._drain_audio(final=False)

    def _encode_video(self, frame: VideoFrame) -> None:
        rgb = frame.rgb
        if rgb.shape[0] != self.info.height or rgb.shape[1] != self.info.width:
            raise ValueError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, recorder opened at {self.info.width}x{self.info.height}")
        if self.alpha:  # straight (unassociated) alpha, what ProRes 4444 and WebM players expect
            out = av.VideoFrame.from_ndarray(straight_rgba(frame.premultiplied(), frame.alpha), format="rgba")
        else:
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        out.pts = self.frames_written
        self._mux(self._video.encode(out))
        self.frames_written += 1

    def write_audio(self, chunk: AudioChunk) -> None:
        if self._origin is None or self.failure is not None:
            return  # audio before the first frame is outside the recording
        start = round((chunk.pts - self._origin) * self.info.sample_rate)
        if start > self._video_end_sample() + MAX_PENDING_S * self.info.sample_rate:
            return  # the video stalled: this much sound ahead of it is dropped (silence if the video resumes)
        samples = np.asarray(chunk.samples, np.float32)
        if start < self._audio_samples:  # overlaps what is placed already, or precedes the origin
            samples = samples[self._audio_samples - start :]
        elif start > self._audio_samples:  # a gap: silence
            samples = np.concatenate([np.zeros(start - self._audio_samples, np.float32), samples])
        if samples.size:
            self._audio_pending = np.concatenate([self._audio_pending, samples])
            self._audio_samples += samples.size
        if self._audio is None:
            return
        self._drain_audio(final=False)

    def _video_end_sample(self) -> int:
        return round(self.frames_written / self.info.fps * self.info.sample_rate)

    def _fill_silence(self) -> None:
        """A source that stopped sending (a microphone unplugged, a peer gone) must not hold the video back:
        the muxer writes a second only when every stream has reached it."""
        behind = self._video_end_sample() - int(AUDIO_LAG_S * self.info.sample_rate) - self._audio_samples
        if behind > 0:
            self._audio_pending = np.concatenate([self._audio_pending, np.zeros(behind, np.float32)])
            self._audio_samples += behind

    def _drain_audio(self, final: bool) -> None:
        # Encode audio only as far as the video has come, so the file never holds sound past its last frame.
        video_end = self._video_end_sample()
        block = self._audio_block
        while (self._audio_pending.size >= block and self._audio_encoded + block <= video_end) or (
            final and self._audio_pending.size
        ):
            n = min(block, self._audio_pending.size)
            samples, self._audio_pending = self._audio_pending[:n], self._audio_pending[n:]
            out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            out.sample_rate = self.info.sample_rate
            out.pts = self._audio_encoded
            self._audio_encoded += n
            self._mux(self._audio.encode(out))

    def _mux(self, packets: list[Any]) -> None:
        """Write packets; a failed write cuts the file back to its last complete piece and stops recording."""
        if not packets:
            return
        try:
            self._container.mux(packets)
        except OSError as exc:
            self._stop_writing(exc)
            assert self.failure is not None
            raise self.failure from exc
        with contextlib.suppress(OSError):
            self._good_size = os.stat(self.path).st_size

    def _stop_writing(self, exc: OSError) -> None:
        seconds = self.frames_written / self.info.fps
        if exc.errno in FULL_DISK:
            why = "the disk is full" if exc.errno != errno.EFBIG else "the file reached the size limit"
            fix = "free some space or record to another disk"
        else:
            why, fix = f"writing failed ({exc.strerror or exc})", "check the disk"
        if os.path.isfile(self.path):
            with contextlib.suppress(OSError):
                os.truncate(self.path, self._good_size)
        self.failure = RecordingFailed(
            f"recording to {self.path} stopped after {seconds:.1f} s: {why}; the file keeps what was recorded "
            f"until then; {fix}"
        )

    def close(self) -> None:
        """Finish the file; raises RecordingFailed when the end could not be written (the file is still cut
        back to its last complete piece and plays)."""
        if self._container is None:
            return
        failed_before = self.failure is not None
        try:
            if not failed_before and self._video is not None:
                self._finish_streams()
                self._container.close()
        except RecordingFailed:
            pass
        except OSError as exc:  # the trailer
            self._stop_writing(exc)
        finally:
            if self.failure is not None:
                with contextlib.suppress(Exception):  # nothing more reaches the file after a failed write
                    self._container.close()
                with contextlib.suppress(OSError):
                    os.truncate(self.path, self._good_size)
            elif self._video is None:
                self._container.close()
            self._container = None
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
        if self.failure is not None and not failed_before:
            raise self.failure
        if self.failure is None:
            log.info("recorded %d frames (%d repeated) to %s", self.frames_written, self.frames_repeated, self.path)

    def _finish_streams(self) -> None:
        end = self.info.extra.get("end")  # where the pipeline's clock ended the stream
        if isinstance(end, (int, float)) and self._last is not None and self._origin is not None:
            while self.frames_written < self._slot(float(end)):  # renders that never came: hold the picture
                self._encode(self._last)
                self.frames_repeated += 1
        # Audio ends with the video: pad with silence or cut what lies past the last frame.
        total = self._video_end_sample()
        wanted = max(0, total - self._audio_encoded)
        pending = self._audio_pending[:wanted]
        if pending.size < wanted:
            pending = np.concatenate([pending, np.zeros(wanted - pending.size, np.float32)])
        self._audio_pending = pending
        self._audio_samples = total
        self._drain_audio(final=True)
        self._mux(self._audio.encode(None))
        self._mux(self._video.encode(None))
