"""Sessions' recordings: the folder they go to, the names of their files, and how many record at once.

A request may ask a session to record (`"record": true` on creation, `POST /api/sessions/<id>/record`), never
where: any web page can send requests to 127.0.0.1, so a path from a request could overwrite any file the user
may write. The folder is the config's (`sessions.record_dir`, by default `recordings` in the per-user folder,
made when the first recording starts), and the daemon names each file after the session and the UTC time it
started: `<session>-<YYYYmmdd-HHMMSS>Z.mp4` (a session's name is an id or a config's name, checked against
`SESSION_NAME`, so it never holds a path). What a web page is told of a recording is its file name only.

`sessions.max_recordings` bounds the sessions recording at once (the default session's `outputs.record.path`
counts); one more is refused with `RecordingRefused`. Each recording is a recorder sink on its session's
pipeline: it has the recorder's full-disk handling (the file is cut back to its last complete second and the
recording stops, the session keeps running) and is finalised when it is stopped or its session ends.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.core.config import Config
from bridge.core.deadline import off_loop
from bridge.core.errors import UserError
from bridge.core.user_dirs import user_data_dir
from bridge.runtime import build

if TYPE_CHECKING:
    from bridge.runtime.recording import Recording
    from bridge.runtime.session import Session
    from bridge.runtime.sessions import SessionRegistry
    from drivers.output.recorder import RecorderSink

SUFFIX = ".mp4"  # H.264 + AAC: plays everywhere
FINISH_S = 10.0  # how long stopping a recording waits for its file to be finalised
OPEN_S = 10.0  # ... and starting one for its folder (storage that hangs never holds the loop)
DISK_FIX = "check the disk that holds sessions.record_dir"


class RecordingRefused(UserError):
    """A recording that cannot start now: the limit of recordings at once is reached, or one is starting."""


def default_record_dir() -> Path:
    """Where sessions record when `sessions.record_dir` is not set: `recordings` in the per-user folder."""
    return user_data_dir() / "recordings"


def file_name(session: str, when: float) -> str:
    """The file a recording of `session` started at `when` (seconds since the epoch) is named."""
    stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%Y%m%d-%H%M%SZ")
    return f"{session}-{stamp}{SUFFIX}"


class Recorders:
    """The host's recordings of its sessions: where they go, what they are named, how many at once."""

    def __init__(self, config: Config, sessions: SessionRegistry) -> None:
        self._config = config
        self._sessions = sessions
        self._starting: set[str] = set()  # sessions whose recording is being set up off the loop

    @property
    def limit(self) -> int:
        return self._config.sessions.max_recordings

    @property
    def folder(self) -> Path:
        chosen = self._config.sessions.record_dir
        return chosen.expanduser() if chosen is not None else default_record_dir()

    def count(self) -> int:
        """Recordings running or being set up."""
        running = sum(1 for s in self._sessions if s.recording is not None and s.recording.active)
        return running + len(self._starting)

    def claim(self, name: str) -> None:
        """Take a place for a recording of session `name` (on the loop); raises RecordingRefused."""
        if name in self._starting:
            raise RecordingRefused(f"a recording of session {name!r} is starting already")
        if self.limit == 0:
            raise RecordingRefused("this daemon records no session on request (sessions.max_recordings = 0)")
        if self.count() >= self.limit:
            raise RecordingRefused(f"{self.count()} sessions record already, the most at once "
                                   f"(sessions.max_recordings = {self.limit})")
        self._starting.add(name)

    def unclaim(self, name: str) -> None:
        self._starting.discard(name)

    def new_sink(self, name: str) -> RecorderSink:
        """Blocking: a recorder for session `name` into a new file of the folder (made when missing). A name
        taken already (two recordings in one second) gets a number."""
        folder = self.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot make the recordings folder {folder}: {exc.strerror or exc}; set "
                            "sessions.record_dir to a writable folder") from None
        stem = file_name(name, time.time()).removesuffix(SUFFIX)
        path, number = folder / f"{stem}{SUFFIX}", 1
        while path.exists() or path.is_symlink():
            number += 1
            path = folder / f"{stem}-{number}{SUFFIX}"
        return build.recorder(self._config, path)

    async def start(self, session: Session) -> Recording:
        """Record `session` into a new file (its running recording when it has one); raises RecordingRefused
        or UserError (a folder it cannot write)."""
        if session.recording is not None and session.recording.active:
            return session.recording
        self.claim(session.name)
        try:
            return await off_loop(lambda: session.record(self.new_sink(session.name)), OPEN_S,
                                  "making the recording's file", DISK_FIX)
        finally:
            self.unclaim(session.name)

    async def stop(self, session: Session) -> Recording | None:
        """Stop `session`'s recording and wait until its file is finalised (a playable file)."""
        recording = session.recording
        if recording is None:
            return None
        await off_loop(lambda: session.stop_recording(FINISH_S), FINISH_S + 1.0, "finishing the recording",
                       DISK_FIX)
        return recording
