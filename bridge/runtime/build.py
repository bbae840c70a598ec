"""Building the daemon's parts from the config: the one place that decides which drivers run and what each is
handed. Every driver is made by `registry.create(kind, name, config, **collaborators)`, i.e. by its own
`from_config`; this module only chooses the names and wires the collaborators (the avatar for the face
driver, the remote-audio inbox for the WebRTC source, the running daemon for outputs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.controls.mixer import Mixer
from bridge.core.alpha_demand import AlphaDemand
from bridge.core.config import Config
from bridge.core.interfaces import (
    AudioSource,
    Avatar,
    ControlSurface,
    FaceDriver,
    FrameSink,
    MediaHub,
    SessionScope,
)
from bridge.core.models import ModelCache, process_models
from bridge.runtime import registry

if TYPE_CHECKING:
    from drivers.audio.webrtc_in import RemoteAudioInbox
    from drivers.avatar.scene.avatar import SceneAvatar
    from drivers.avatar.scene.control import BackgroundTable
    from drivers.output.passthrough import AudioPassthrough
    from drivers.output.recorder import RecorderSink
    from drivers.output.virtual_mic import VirtualMic
    from drivers.output.webrtc.fanout import MediaFanout
    from drivers.output.webrtc.peers import ViewerHub
    from drivers.output.webrtc.publisher import Publisher

log = logging.getLogger(__name__)


def avatar(config: Config, demand: AlphaDemand, models: ModelCache | None = None) -> SceneAvatar:
    """The head avatar of `avatar.kind` (its weights from `models`, default: the process's cache, shared by every
    session), rendering its region of the frame as `[video.framing]` places it, inside the scene that composites
    torso and head over the background (alpha while `demand` wants it)."""
    from drivers.avatar.scene import build as scene_build

    framed = scene_build.framing(config)
    head: Avatar = registry.create("avatar", config.avatar.kind, config, models=models or process_models(),
                                   framing=framed)
    return scene_build.scene(config, head, framed, demand)


def backgrounds(config: Config, scene: SceneAvatar) -> BackgroundTable:
    """The backgrounds the API and OSC may switch `scene` to: `avatar.backgrounds` and the built-in ones."""
    from drivers.avatar.scene.control import BackgroundTable

    return BackgroundTable(scene, config.avatar.background, config.avatar.backgrounds)


def face_driver(config: Config, avatar: Avatar, models: ModelCache | None = None) -> FaceDriver:
    """The face driver, its weights (and hop batcher) from `models` (default: the process's cache)."""
    made: FaceDriver = registry.create("face", config.face.driver, config, avatar=avatar,
                                       models=models or process_models())
    return made


def remote_audio() -> RemoteAudioInbox:
    """Where WebRTC viewers hand a remote talker's audio track, for the WebRTC audio source."""
    from drivers.audio.webrtc_in import RemoteAudioInbox

    return RemoteAudioInbox()


def audio_source(config: Config, inbox: RemoteAudioInbox) -> AudioSource:
    name = config.audio.source
    if name == "webrtc":
        mix = registry.create("audio", "microphone", config) if config.audio.webrtc_mix else None
        made: AudioSource = registry.create("audio", name, config, inbox=inbox, mix=mix)
    else:
        made = registry.create("audio", name, config)
    return made


def mixer(config: Config, avatar: Avatar) -> Mixer:
    return Mixer.from_config(config, avatar_name=avatar.name)


def sinks(config: Config) -> list[FrameSink]:
    """The sinks the [outputs] section turns on beside a recording (`recorder`): snapshots, a virtual camera."""
    out = config.outputs
    names = [name for name, wanted in (("snapshot", out.snapshot_dir is not None),
                                       ("virtualcam", out.virtualcam.enabled)) if wanted]
    return [registry.create("sink", name, config) for name in names]


def recorder(config: Config, path: Path) -> RecorderSink:
    """A recording to `path` with the `[outputs.record]` encoder settings (refuses a path it cannot write)."""
    wanted = config.model_copy(deep=True)
    wanted.outputs.record.path = path
    made: RecorderSink = registry.create("sink", "recorder", wanted)
    return made


def control_surfaces(config: Config, mixer: Mixer, sessions: SessionScope) -> list[ControlSurface]:
    """The enabled surfaces, not yet started (the daemon starts them on its loop); OSC addresses the default
    session's `mixer` and, by name, the daemon's `sessions`. MIDI without a usable backend or port is left off
    with a warning: the daemon runs without it."""
    from drivers.control.midi import MidiError

    surfaces: list[ControlSurface] = []
    if config.osc.enabled:
        surfaces.append(registry.create("control", "osc", config, state=mixer.state, sessions=sessions))
    if config.vmc.enabled:
        surfaces.append(registry.create("control", "vmc", config))
    if config.midi.enabled:
        try:
            surfaces.append(registry.create("control", "midi", config))
        except MidiError as exc:
            log.warning("MIDI input is off: %s", exc)
    return surfaces


def passthrough(config: Config, hub: MediaHub, device: str | int | None) -> AudioPassthrough:
    """The delayed speech on a local output device (not yet started)."""
    made: AudioPassthrough = registry.create("output", "passthrough", config, hub=hub, device=device)
    return made


def virtual_mic(config: Config) -> VirtualMic:
    """The Linux virtual microphone the delayed speech plays into (not yet created)."""
    made: VirtualMic = registry.create("output", "virtual_mic", config)
    return made


def viewers(config: Config, hub: MediaHub) -> ViewerHub:
    """The WebRTC viewers of `hub` (one session): WHEP, the JSON offer, talk-in audio."""
    made: ViewerHub = registry.create("output", "viewers", config, hub=hub)
    return made


def publisher(name: str, config: Config, hub: MediaHub, fanout: MediaFanout) -> Publisher:
    """A WHIP or Janus publisher of `hub`, fed by the viewers' shared encoders (not yet started)."""
    made: Publisher = registry.create("output", name, config, hub=hub, fanout=fanout)
    return made
