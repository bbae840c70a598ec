"""One registry from config names to driver classes.

Entries are import paths, so a driver's library (gsplat, aiortc, sounddevice, ...) is imported only when the
config actually selects it.
"""

from __future__ import annotations

import importlib
from typing import Any

DRIVERS: dict[str, dict[str, str]] = {
    "audio": {
        "file": "drivers.audio.file:FileAudioSource",
        "microphone": "drivers.audio.microphone:MicrophoneAudioSource",
        "silence": "drivers.audio.file:SilenceAudioSource",
        "webrtc": "drivers.audio.webrtc_in:WebRTCAudioSource",
    },
    "face": {
        "procedural": "drivers.face.procedural:ProceduralFaceDriver",
        "diffposetalk": "drivers.face.diffposetalk.streaming:DiffPoseTalkFaceDriver",
    },
    "avatar": {
        "demo": "drivers.avatar.demo.avatar:DemoAvatar",
        "flashavatar": "drivers.avatar.flashavatar.avatar:FlashAvatarAvatar",
    },
    "sink": {
        "recorder": "drivers.output.recorder:RecorderSink",
        "snapshot": "drivers.output.snapshot:SnapshotSink",
        "virtualcam": "drivers.output.virtualcam:VirtualCameraSink",
    },
}


class UnknownDriverError(LookupError):
    pass


def register(kind: str, name: str, target: str) -> None:
    """Add or replace a driver: `target` is "package.module:Class"."""
    DRIVERS.setdefault(kind, {})[name] = target


def names(kind: str) -> list[str]:
    return sorted(DRIVERS.get(kind, {}))


def resolve(kind: str, name: str) -> Any:
    """The class registered as `name` under `kind`, imported on first use."""
    table = DRIVERS.get(kind)
    if table is None:
        raise UnknownDriverError(f"no driver kind {kind!r}; kinds are {sorted(DRIVERS)}")
    target = table.get(name)
    if target is None:
        raise UnknownDriverError(f"unknown {kind} driver {name!r}; choose one of {sorted(table)}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    return resolve(kind, name)(**kwargs)
