"""PNG snapshots of the stream: on request (`request()`), or every `every_s` seconds into a folder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import AudioChunk, StreamInfo, VideoFrame
from drivers.output.png import write_png


class SnapshotSink:
    name = "snapshot"

    def __init__(self, directory: Path | str, every_s: float | None = None) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the snapshot folder {self.directory}: {exc}") from exc
        self.every_s = every_s
        self._wanted: list[tuple[Path, threading.Event]] = []
        self._lock = threading.Lock()
        self._last_auto = float("-inf")
        self.written: list[Path] = []

    @classmethod
    def from_config(cls, config: Config) -> SnapshotSink:
        folder = config.outputs.snapshot_dir
        if folder is None:
            raise UserError("outputs.snapshot_dir is not set: give the folder for snapshots")
        return cls(folder)

    def open(self, info: StreamInfo) -> None:
        self.info = info

    def request(self, name: str | None = None) -> threading.Event:
        """Ask for the next frame as a PNG; the returned event is set once it is written."""
        done = threading.Event()
        path = self.directory / (name or time.strftime("snapshot-%Y%m%d-%H%M%S.png"))
        with self._lock:
            self._wanted.append((path, done))
        return done

    def write_video(self, frame: VideoFrame) -> None:
        with self._lock:
            wanted, self._wanted = self._wanted, []
        for path, done in wanted:
            self.written.append(write_png(path, frame.rgb, frame.alpha))
            done.set()
        if self.every_s is not None and frame.pts - self._last_auto >= self.every_s:
            self._last_auto = frame.pts
            self.written.append(write_png(self.directory / f"frame-{frame.index:06d}.png", frame.rgb, frame.alpha))

    def write_audio(self, chunk: AudioChunk) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            for _, done in self._wanted:
                done.set()
            self._wanted = []
