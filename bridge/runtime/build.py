"""Building the daemon's drivers from the config: avatar, face driver, audio source, mixer, sinks and control
surfaces (OSC, VMC, MIDI). Driver classes are looked up by name in `registry`, so a driver's library is
imported only when the config selects it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bridge.controls.mixer import Mixer, create_mixer
from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import AudioSource, Avatar, ControlSurface, FaceDriver, FrameSink
from bridge.runtime import registry

log = logging.getLogger(__name__)


def build_avatar(config: Config) -> Avatar:
    a = config.avatar
    common: dict[str, Any] = {
        "width": config.video.width,
        "height": config.video.height,
        "renderer": a.renderer,
        "device": a.device,
        "background": a.background,
        "transparent": a.transparent,
        "zoom": a.zoom,
    }
    if a.kind == "flashavatar":
        for key in ("checkpoint", "flame_model", "flame_masks", "flame_mesh", "eyelids_dir", "tracker_frame", "shape"):
            common[key] = getattr(a, key)
    avatar: Avatar = registry.create("avatar", a.kind, **common)
    return avatar


def build_audio_source(config: Config, name: str | None = None, device: str | int | None = None) -> AudioSource:
    a = config.audio
    name = name or a.source
    if name == "file":
        kwargs: dict[str, Any] = {"path": a.file, "realtime": a.realtime, "loop": a.loop}
    elif name == "microphone":
        kwargs = {"device": device if device is not None else a.device}
    elif name == "silence":
        kwargs = {"realtime": True}
    elif name == "webrtc" and a.webrtc_mix:
        kwargs = {"mix": registry.create("audio", "microphone", device=device if device is not None else a.device)}
    else:
        kwargs = {}
    source: AudioSource = registry.create("audio", name, **kwargs)
    return source


def build_face_driver(config: Config, avatar: Avatar) -> FaceDriver:
    f = config.face
    fps = config.video.fps
    if f.driver == "procedural":
        channels: dict[str, int] = getattr(avatar, "expression_channels", {}) or {}
        kwargs: dict[str, Any] = f.procedural.model_dump()
        kwargs.update(fps=fps, pucker_channel=channels.get("pucker"), wide_channel=channels.get("wide"))
    else:
        kwargs = f.diffposetalk.model_dump()
        kwargs["fps"] = fps
        if kwargs.get("checkpoint") is None:
            raise UserError(
                "face.driver = 'diffposetalk' needs face.diffposetalk.checkpoint (an iter_*.pt file) and "
                "face.diffposetalk.stats (stats_train.npz); see install/models.md"
            )
    driver: FaceDriver = registry.create("face", f.driver, **kwargs)
    return driver


def build_mixer(config: Config, avatar: Avatar) -> Mixer:
    return create_mixer(config, avatar.name)


def build_sinks(config: Config, record: Path | None = None) -> list[FrameSink]:
    sinks: list[FrameSink] = []
    out = config.outputs
    path = record or out.record.path
    if path is not None:
        sinks.append(registry.create("sink", "recorder", path=path, crf=out.record.crf, preset=out.record.preset))
    if out.snapshot_dir is not None:
        sinks.append(registry.create("sink", "snapshot", directory=out.snapshot_dir))
    if out.virtualcam.enabled:
        vc = out.virtualcam
        sinks.append(
            registry.create("sink", "virtualcam", device=vc.device, backend=vc.backend, mirror=vc.mirror, fmt=vc.fmt)
        )
    return sinks


def build_control_surfaces(config: Config, mixer: Mixer | None = None) -> list[ControlSurface]:
    """The enabled surfaces, not yet started (the daemon starts them on its loop)."""
    surfaces: list[ControlSurface] = []
    if config.osc.enabled:
        from drivers.control.osc import OscControlSurface

        state = mixer.state if mixer is not None else None
        surfaces.append(OscControlSurface.from_config(config.osc, state=state))
    if config.vmc.enabled:
        from drivers.control.vmc import VmcControlSurface

        surfaces.append(VmcControlSurface.from_config(config.vmc, allow=config.osc.allow))
    if config.midi.enabled:
        from drivers.control.midi import MidiControlSurface, MidiError

        try:
            surfaces.append(MidiControlSurface.from_config(config.midi))
        except MidiError as exc:
            log.warning("MIDI input is off: %s", exc)
    return surfaces


def find_surface(daemon: Any, name: str) -> Any:
    """A running surface by name (e.g. "midi"), or None."""
    for s in getattr(daemon, "control_surfaces", []) or []:
        if getattr(s, "name", None) == name:
            return s
    return None
