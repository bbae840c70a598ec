"""Decode any audio PyAV can read into 16 kHz mono float32, the format every AudioSource delivers.

Decoding and resampling run on the calling thread only (`thread_count = 1`, `mono_resampler`): speech decodes
hundreds of times faster than real time on one core, and the threads FFmpeg would start (two per file for the
resampler's filter graph) are freed only when PyAV's objects are collected, which in a daemon that keeps its
garbage collections short can be long after the file was closed. A file played in a loop, or a WebRTC talker
after another, would otherwise gather threads with every round.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Generator
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError
from bridge.core.interfaces import SAMPLE_RATE


def mono_resampler(rate: int = SAMPLE_RATE, sample_format: str = "flt") -> av.AudioResampler:
    """A resampler to mono at `rate` that starts no threads of its own (see above)."""
    return av.AudioResampler(format=sample_format, layout="mono", rate=rate, threads=1)


def iter_decoded(path: Path | str, sample_rate: int = SAMPLE_RATE) -> Generator[NDArray[np.float32], None, None]:
    """Yield float32 mono blocks at `sample_rate` as the file decodes; raises UserError for unusable files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file {path} does not exist; give the path of a speech recording (wav, mp3, ogg, ...)")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, OSError) as exc:
        raise UserError(f"audio file {path} could not be opened ({exc}); is it an audio or video file?") from exc
    with container:
        if not container.streams.audio:
            raise UserError(f"{path} has no audio stream; give a file that contains speech audio")
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        resampler = mono_resampler(sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        except av.error.FFmpegError as exc:
            raise UserError(f"audio file {path} is damaged or truncated ({exc}); re-export or re-record it") from exc


class DecodedClips:
    """Short files decoded once per process: a file played in a loop, or by several sessions at once (the demo
    speech), is decoded on its first pass only; later passes read the samples. Keyed by the file's path, size
    and modification time (an edited file decodes again); only files up to `max_seconds` are kept, and at most
    `max_files` of them, so a long recording streams as before."""

    def __init__(self, max_seconds: float = 120.0, max_files: int = 4) -> None:
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.max_files = max_files
        self._clips: OrderedDict[tuple[str, int, int], NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return str(path.resolve()), st.st_size, st.st_mtime_ns

    def blocks(self, path: Path | str) -> Generator[NDArray[np.float32], None, None]:
        """`iter_decoded(path)`'s blocks (16 kHz): the kept samples as one read-only block, or the file decoded,
        then kept when it was read to its end and is short enough."""
        path = Path(path)
        key = self._key(path)
        clip = None
        if key is not None:
            with self._lock:
                clip = self._clips.get(key)
                if clip is not None:
                    self._clips.move_to_end(key)
        if clip is not None:
            yield clip
            return
        kept: list[NDArray[np.float32]] | None = []
        size = 0
        with contextlib.closing(iter_decoded(path)) as decoded:
            for block in decoded:
                if kept is not None:
                    size += block.size
                    if size <= self.max_samples:
                        kept.append(block)
                    else:
                        kept = None
                yield block
        if kept is not None and key is not None:
            whole = np.concatenate(kept) if kept else np.zeros(0, np.float32)
            whole.flags.writeable = False
            with self._lock:
                self._clips[key] = whole
                while len(self._clips) > self.max_files:
                    self._clips.popitem(last=False)


CLIPS = DecodedClips()


def decode_audio(path: Path | str, sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """The whole file as one float32 mono array."""
    blocks = list(iter_decoded(path, sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def demo_clip_path() -> Path:
    """The speech clip that ships with the package (espeak-ng, about 13 s)."""
    return Path(__file__).with_name("data") / "demo_speech.ogg"
