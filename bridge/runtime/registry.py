"""The one table of driver names: config names to driver classes, per kind.

Entries are import paths, so a driver's library (gsplat, aiortc, sounddevice, ...) is imported only when the
config actually selects it. Every driver class builds itself with `from_config(config, **collaborators)`;
`create` is the one way to call it. The config's choices (`audio.source`, `face.driver`, `avatar.kind`) are
checked against these names by a test.
"""

from __future__ import annotations

import importlib
from typing import Any

from bridge.core.config import Config

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
    "control": {
        "osc": "drivers.control.osc:OscControlSurface",
        "vmc": "drivers.control.vmc:VmcControlSurface",
        "midi": "drivers.control.midi:MidiControlSurface",
    },
    "output": {  # outputs that read the running daemon (a MediaHub) instead of receiving frames as a sink
        "passthrough": "drivers.output.passthrough:AudioPassthrough",
        "virtual_mic": "drivers.output.virtual_mic:VirtualMic",
        "viewers": "drivers.output.webrtc.peers:ViewerHub",
        "whip": "drivers.output.webrtc.whip:WhipPublisher",
        "janus": "drivers.output.webrtc.janus:JanusPublisher",
    },
}


class UnknownDriverError(LookupError):
    pass


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


def create(kind: str, name: str, config: Config, /, **collaborators: Any) -> Any:
    """Build driver `name` of `kind` from the config, handing it the collaborators it declares (e.g. the
    avatar for a face driver, the MediaHub for an output)."""
    return resolve(kind, name).from_config(config, **collaborators)
