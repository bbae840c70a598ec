"""One recording of a session: the recorder on its pipeline, and what a web page may be told of it (the file's
name, never its folder). Where recordings go and how many run at once is `bridge.runtime.recordings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.runtime.sinks import SinkRunner
    from drivers.output.recorder import RecorderSink


@dataclass
class Recording:
    """One recording of a session: its recorder and the runner feeding it on the session's pipeline."""

    sink: RecorderSink
    runner: SinkRunner
    started: float  # wall-clock time, seconds since the epoch
    fps: int
    stopped: bool = False  # asked to stop (over HTTP, or by the session's end)

    @property
    def file(self) -> str:
        """The file's name, all a web page is told of where it is."""
        return self.sink.path.name

    @property
    def active(self) -> bool:
        """Still recording: neither stopped nor given up (a full disk, a failed write)."""
        return not self.stopped and self.runner.failed is None

    def error(self) -> str | None:
        """Why it stopped before it was asked to, with the file's name in place of its path."""
        if self.runner.failed is None:
            return None
        return str(self.runner.failed).replace(str(self.sink.path), self.file)

    def describe(self) -> dict[str, Any]:
        return {"recording": self.active, "file": self.file, "started": self.started,
                "frames": self.sink.frames_written, "seconds": round(self.sink.frames_written / self.fps, 2),
                "finished": not self.active and self.runner.finished, "error": self.error()}
