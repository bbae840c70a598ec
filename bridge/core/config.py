"""The daemon's configuration: one TOML file, validated with pydantic, defaults for everything.

Environment variables override the file: `AVATAR_BRIDGE__SECTION__FIELD=value` (value parsed as TOML, so
`AVATAR_BRIDGE__VIDEO__FPS=30` and `AVATAR_BRIDGE__OSC__ENABLED=false` work). Errors name the field, the
bad value and what to do.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.core.arkit import ARKIT_NAMES
from bridge.core.face_params import N_EXPRESSION, FaceParams
from bridge.core.http_names import normalise_origin, split_host

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "AVATAR_BRIDGE__"


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the file."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _milliseconds(field: str, v: Any, top: float) -> Any:
    """'auto' or a finite number of milliseconds in 0..top, checked before the union is tried (one message)."""
    if v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= top:
        raise ValueError(f"{field} must be 'auto' or a number of milliseconds in 0..{top:g}")
    return v


def _rgb(value: Any) -> tuple[float, float, float]:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) != 6:
            raise ValueError("use a hex colour like '#00ff00' or a list of three numbers in [0, 1]")
        return (int(text[0:2], 16) / 255.0, int(text[2:4], 16) / 255.0, int(text[4:6], 16) / 255.0)
    if isinstance(value, (list, tuple)) and len(value) == 3:
        rgb = tuple(float(v) for v in value)
        if all(0.0 <= v <= 1.0 for v in rgb):
            return rgb  # type: ignore[return-value]
    raise ValueError("use a hex colour like '#00ff00' or a list of three numbers in [0, 1]")


class FramingConfig(Section):
    """Where the head sits in the frame: a preset, or numbers that override the preset's."""

    # auto: "fill" for a square frame (the head fills it), "webcam" (head and shoulders) for any other shape
    preset: Literal["auto", "webcam", "close", "wide", "fill"] = "auto"
    head_height: float | None = Field(None, gt=0.05, le=1.5)  # the head's height / the frame's height
    eye_line: float | None = Field(None, ge=0.0, le=1.0)  # the head's centre, from the top (fraction of height)
    center_x: float | None = Field(None, ge=0.0, le=1.0)  # the head's centre, from the left (fraction of width)


class VideoConfig(Section):
    fps: Literal[25, 30, 60] = 25
    width: int = Field(1280, ge=64, le=3840)  # 16:9, what call apps expect of a camera
    height: int = Field(720, ge=64, le=2160)
    framing: FramingConfig = FramingConfig()

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (H.264 and I420 need even sizes)")
        return v


class AudioConfig(Section):
    source: Literal["file", "microphone", "webrtc", "silence"] = "file"
    file: Path | None = None  # None: the embedded demo clip
    device: str | int | None = None  # microphone name or index; None: the system default
    realtime: bool = True  # pace a file source in real time (False: as fast as the pipeline takes it)
    loop: bool = False
    webrtc_mix: bool = False  # source 'webrtc': also mix in the local microphone (audio.device)


class ProceduralFaceConfig(Section):
    attack_ms: float = Field(12.0, gt=0, le=500)
    release_ms: float = Field(90.0, gt=0, le=2000)
    gain: float = Field(1.0, gt=0, le=10)
    max_jaw: float = Field(0.35, gt=0, le=1.0)


class DiffPoseTalkConfig(Section):
    checkpoint: Path | None = None
    stats: Path | None = None
    style: Path | None = None
    shape: Path | None = None
    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int = Field(5, ge=1, le=1000)  # DDIM steps; 5 keeps a hop within the real-time budget (bench/)
    hop_frames: int = Field(3, ge=1, le=100)
    lookahead_frames: int = Field(1, ge=0, le=50)  # (hop + lookahead) / fps = 160 ms algorithmic latency
    audio_context_s: float = Field(2.0, ge=0.0, le=30.0)
    cfg_audio: float = 1.15
    cfg_style: float = 3.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tf32: bool = True  # TF32 matmuls on CUDA: about 1.6x faster hops, differences far below the motion's scale


class FaceConfig(Section):
    driver: Literal["procedural", "diffposetalk"] = "procedural"
    procedural: ProceduralFaceConfig = ProceduralFaceConfig()
    diffposetalk: DiffPoseTalkConfig = DiffPoseTalkConfig()


BACKGROUND_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_BACKGROUNDS = 64
Background = tuple[float, float, float] | Path


def _background(value: Any) -> Background:
    """A colour ('#rrggbb' or three numbers in [0, 1]) or a picture / video file path."""
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and not value.strip().startswith("#"):
        path = Path(value.strip()).expanduser()
        if not path.is_file():
            raise ValueError(f"{value!r} is neither a hex colour like '#00ff00' nor an existing picture or video "
                             "file; give a colour or the path of a .png/.jpg/.mp4/.webm file")
        return path
    return _rgb(value)


class AvatarConfig(Section):
    kind: Literal["demo", "flashavatar"] = "demo"
    renderer: Literal["auto", "cpu", "tiles", "reference", "gsplat"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Behind the avatar on outputs without alpha: a colour, a picture (.png, .jpg) or a video played in a loop;
    # None (not set): the built-in studio backdrop, a soft wall made in code.
    background: Background | None = None
    # Backgrounds the HTTP API and OSC (/avatar/background NAME) may switch to, by name; "default" is always
    # `background`, "studio", "black" and "green" are always there.
    backgrounds: dict[str, Background] = Field(default_factory=dict)
    torso: Path | None = None  # a torso plate (avatar-bridge avatar torso) drawn under the head
    transparent: bool = False  # outputs without alpha: black behind the avatar instead of the background
    zoom: float = Field(1.0, gt=0.1, le=10.0)
    # FlashAvatar: a trained checkpoint and the FLAME files it was trained with.
    checkpoint: Path | None = None
    flame_model: Path | None = None
    flame_masks: Path | None = None
    flame_mesh: Path | None = None  # FlameMesh.obj (UV template); None: next to the checkpoint or the FLAME file
    eyelids_dir: Path | None = None  # folder with l_eyelid.npy and r_eyelid.npy
    tracker_frame: Path | None = None  # a metrical-tracker .frame for shape and camera
    shape: Path | None = None  # alternatively a .npy / .npz with the 300 shape coefficients

    @field_validator("background", mode="before")
    @classmethod
    def _bg(cls, v: Any) -> Background | None:
        return None if v is None else _background(v)

    @field_validator("backgrounds", mode="before")
    @classmethod
    def _bgs(cls, v: Any) -> dict[str, Background]:
        if not isinstance(v, dict):
            raise ValueError("use a table of name = colour or file, e.g. {office = 'office.jpg', green = '#00ff00'}")
        if len(v) > MAX_BACKGROUNDS:
            raise ValueError(f"has {len(v)} entries; at most {MAX_BACKGROUNDS}")
        out: dict[str, Background] = {}
        for name, value in v.items():
            if not isinstance(name, str) or not BACKGROUND_NAME.match(name):
                raise ValueError(f"name {name!r}: use 1-32 lower-case letters, digits, '-' or '_'")
            out[name] = _background(value)
        return out

    @model_validator(mode="after")
    def _flashavatar_files(self) -> AvatarConfig:
        if self.kind == "flashavatar":
            missing = [n for n in ("checkpoint", "flame_model") if getattr(self, n) is None]
            if missing:
                raise ValueError(
                    "avatar.kind = 'flashavatar' needs " + " and ".join(f"avatar.{m}" for m in missing)
                    + " (paths to chkpnt*.pth and FLAME 2020 generic_model.pkl)"
                )
        return self


MAX_DELAY_MS = 5000.0  # audio delays (presentation, passthrough): more is a mistake, not a setting


class PipelineConfig(Section):
    render_queue: int = Field(2, ge=1, le=16)
    sink_queue: int = Field(3, ge=1, le=64)
    av_delay_ms: float | Literal["auto"] = "auto"  # audio → presentation delay; auto = driver latency + margin
    # Time for the face and render compute beyond the driver's latency: auto = 30 ms when the avatar renders on
    # a GPU (a frame takes a few ms), 60 ms on the CPU (room for a CPU render of up to one frame period).
    margin_ms: float | Literal["auto"] = "auto"
    # On a GPU shared with other programs, the avatar's render and the face driver's hops run on CUDA streams of
    # the highest priority, so their kernels go ahead of the other programs' waiting ones.
    gpu_priority: bool = True

    @field_validator("margin_ms", mode="before")
    @classmethod
    def _margin(cls, v: Any) -> Any:
        return _milliseconds("pipeline.margin_ms", v, 2000.0)

    @field_validator("av_delay_ms", mode="before")
    @classmethod
    def _av_delay(cls, v: Any) -> Any:
        return _milliseconds("pipeline.av_delay_ms", v, MAX_DELAY_MS)

    def margin_s(self, avatar_device: str) -> float:
        """The margin in seconds for an avatar rendering on `avatar_device`."""
        if self.margin_ms == "auto":
            return 0.030 if avatar_device.startswith("cuda") else 0.060
        return float(self.margin_ms) / 1000.0


class RecorderConfig(Section):
    path: Path | None = None
    crf: int = Field(20, ge=0, le=51)
    preset: str = "veryfast"


class VirtualCamConfig(Section):
    enabled: bool = False
    device: str | None = None
    backend: str | None = None
    mirror: bool = False
    fmt: Literal["auto", "rgb", "i420", "nv12", "rgba"] = "auto"  # rgba: alpha (Unity Capture on Windows only)


class PassthroughConfig(Section):
    enabled: bool = False
    device: str | int | None = None  # PortAudio output name/index, or "pulse:SINK" (a PulseAudio/PipeWire sink)
    delay_ms: float | Literal["auto"] = "auto"
    create: bool = False  # Linux: make the "Avatar Bridge Mic" virtual microphone, play into it, remove on exit

    @field_validator("delay_ms", mode="before")
    @classmethod
    def _delay(cls, v: Any) -> Any:
        return _milliseconds("outputs.passthrough.delay_ms", v, MAX_DELAY_MS)  # as POST /api/passthrough refuses


class OutputsConfig(Section):
    record: RecorderConfig = RecorderConfig()
    snapshot_dir: Path | None = None
    virtualcam: VirtualCamConfig = VirtualCamConfig()
    passthrough: PassthroughConfig = PassthroughConfig()


MIN_TOKEN_LENGTH = 16
MIN_TOKEN_DISTINCT = 8
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _token_problem(token: str) -> str | None:
    """Why `token` is too weak to guard a daemon other machines can reach, or None."""
    if token != token.strip() or any(c.isspace() for c in token):
        return "contains spaces"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is {len(token)} characters long (at least {MIN_TOKEN_LENGTH})"
    if len(set(token)) < MIN_TOKEN_DISTINCT:
        return f"uses only {len(set(token))} different characters (at least {MIN_TOKEN_DISTINCT})"
    return None


def _no_wildcard(entry: str, what: str, example: str) -> None:
    if "*" in entry:
        raise ValueError(f"{entry!r}: wildcards are not supported in {what}; list each one, e.g. {example!r}")


def _origin(entry: str) -> str:
    """An allowed origin, normalised as the request policy compares origins (a trailing slash is forgiven)."""
    _no_wildcard(entry, "http.allowed_origins", "https://player.example")
    norm = normalise_origin(entry.strip().rstrip("/"))
    if norm is None:
        raise ValueError(f"{entry!r} is not an origin; write scheme://host[:port], e.g. 'https://player.example'")
    return norm


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: str | None = None
    # Web pages from these origins may use WHEP and the viewer API (CORS) and send requests that change state.
    allowed_origins: list[str] = Field(default_factory=list)
    # Extra names the daemon answers to (e.g. "studio.lan", or "localhost:9999" behind an ssh tunnel); loopback
    # names with the served port and the bound address are always accepted.
    allowed_hosts: list[str] = Field(default_factory=list)
    # A connection that has not sent a complete request for this long is closed (slow or idle clients).
    idle_timeout_s: float = Field(15.0, gt=0, le=3600)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        return [_origin(e) for e in v]

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for entry in v:
            _no_wildcard(entry, "http.allowed_hosts", "studio.lan")
            if split_host(entry) is None:
                raise ValueError(f"{entry!r} is not a host name or name:port")
        return v

    @model_validator(mode="after")
    def _token_when_wide(self) -> HttpConfig:
        if self.token is not None and not self.token.strip():
            raise ValueError("http.token is blank; set a long random string (python -c 'import secrets; "
                             "print(secrets.token_urlsafe(24))') or remove it")
        if self.enabled and self.host not in LOOPBACK_HOSTS:
            if not self.token:
                raise ValueError(
                    f"http.host = {self.host!r} exposes the daemon beyond this machine: set http.token "
                    "(a long random string, e.g. from python -c 'import secrets; print(secrets.token_urlsafe(24))'; "
                    "clients send 'Authorization: Bearer <token>')"
                )
            problem = _token_problem(self.token)
            if problem is not None:
                raise ValueError(
                    f"http.token {problem}: too weak for a daemon reachable from other machines (http.host = "
                    f"{self.host!r}); use a long random string, e.g. from python -c 'import secrets; "
                    "print(secrets.token_urlsafe(24))'"
                )
        return self


class JanusConfig(Section):
    """Publishing to a Janus VideoRoom over its WebSocket API (viewers then play from Janus)."""

    url: str | None = None  # e.g. "ws://127.0.0.1:8188"; None: off
    room: int | str = 1234
    display: str = "Avatar Bridge"
    pin: str | None = None
    api_secret: str | None = None  # Janus's `apisecret`, when its janus.jcfg sets one
    token: str | None = None  # a Janus auth token, when it runs with token_auth
    create_room: bool = True  # create the room when it does not exist

    @field_validator("url")
    @classmethod
    def _websocket(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("ws://", "wss://")):
            raise ValueError("must be Janus's WebSocket API, e.g. 'ws://127.0.0.1:8188' (not the HTTP API)")
        return v


class IceServer(Section):
    urls: str | list[str]
    username: str | None = None
    credential: str | None = None

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: str | list[str]) -> str | list[str]:
        for url in [v] if isinstance(v, str) else v:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a STUN or TURN URL (stun:host:port, turn:host:port)")
        return v


class WebRTCConfig(Section):
    codec: Literal["vp8", "h264"] = "vp8"
    bitrate_kbps: int = Field(2500, ge=100, le=50_000)
    whip_url: str | None = None
    whip_token: str | None = None

    @field_validator("whip_url")
    @classmethod
    def _whip(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith(("http://", "https://")) or not urlsplit(v).hostname):
            raise ValueError("must be the http(s) WHIP endpoint of your media server, e.g. "
                             "'https://media.example/whip/room1'")
        return v
    janus: JanusConfig = JanusConfig()
    # Sessions of every kind (viewers, audio-only listeners, talk-back) count against this one cap; encodes
    # are shared, so a viewer costs packetizing and encryption.
    max_viewers: int = Field(32, ge=1, le=256)
    max_sessions_per_address: int = Field(4, ge=1, le=256)
    # An offer whose peer has not connected within this time is closed (its place freed).
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    # STUN/TURN servers for viewers' connections; none by default, so nothing is asked of outside servers.
    ice_servers: list[IceServer] = Field(default_factory=list)
    alpha: bool = False  # default for viewers: packed colour + alpha video (/whep?alpha=1 asks per viewer)
    tiers: int = Field(3, ge=1, le=4)  # bitrate tiers (each half the one above) viewers move between on congestion


MAX_PACKET_RATE = 1_000_000.0  # packets per second per sender: the budget's ceiling


class OscConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9000, ge=0, le=65535)
    allow: list[str] = Field(default_factory=list)  # source addresses allowed when bound wider than loopback
    # Per sender (address and port): beyond this, its packets are dropped unparsed (counted).
    max_packets_per_second: float = Field(2000.0, ge=1, le=MAX_PACKET_RATE)
    tcp_idle_timeout_s: float = Field(60.0, gt=0, le=86_400)  # OSC over TCP: close a connection idle this long
    tcp_max_connections_per_source: int = Field(8, ge=1, le=1024)

    @field_validator("allow")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network; write e.g. '192.168.1.20' or "
                                 "'192.168.1.0/24'") from None
        return v


class VmcConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(39539, ge=0, le=65535)
    max_packets_per_second: float = Field(2000.0, ge=1, le=MAX_PACKET_RATE)  # per sender, as for OSC


class MidiConfig(Section):
    enabled: bool = True
    input: str | None = None  # port name substring; None: every input port
    map: Path | None = None


class IdleConfig(Section):
    blink: bool = True
    blink_amount: float = Field(default=1.0, ge=0, le=1)
    gaze: bool = True
    gaze_amount: float = Field(default=1.0, ge=0, le=2)
    sway: bool = True
    sway_amount: float = Field(default=1.0, ge=0, le=3)


class MixerConfig(Section):
    fade_ms: float = Field(400.0, ge=0, le=30_000)  # default fade of presets, emotions and hold buttons
    max_manual: int = Field(256, ge=1, le=4096)  # manual controls held at once; more are refused (counted)
    easing: Literal["linear", "smooth", "cubic", "sine", "out"] = "smooth"
    # Per FaceParams group (expression, jaw, eyes, eyelids, neck, head, translation) or per control target
    # (e.g. "blend/jawOpen"): "add" to lip sync or "override" it. Defaults: add on expression and jaw.
    modes: dict[str, Literal["add", "override"]] = Field(default_factory=dict)

    @field_validator("modes")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _mode_name(name):
                raise ValueError(
                    f"{name[:80]!r} is neither a group ({', '.join(FaceParams.LAYOUT)}) nor a control target "
                    "(blend/<ARKit name>, flame/expression/<0-99>, flame/jaw|eyes|eyelids|neck|head|translation, "
                    "gaze, head); see docs/controls.md")
        return v


def _mode_name(name: str) -> bool:
    """A FaceParams group or a manual control target, the names `[mixer] modes` may set."""
    if name in FaceParams.LAYOUT or name in ("gaze", "head"):
        return True
    if name.startswith("blend/"):
        return name.removeprefix("blend/") in ARKIT_NAMES
    if name.startswith("flame/expression/"):
        index = name.removeprefix("flame/expression/")
        return index.isdigit() and int(index) < N_EXPRESSION and index == str(int(index))
    group = name.removeprefix("flame/")
    return name.startswith("flame/") and group in FaceParams.LAYOUT and group != "expression"


class PresetsConfig(Section):
    # Your presets, captures, learned MIDI maps and calibrations, read before and with the shipped presets.
    # None: the per-user folder (bridge.controls.presets.user_presets_dir, e.g. ~/.local/share/avatar-bridge/presets)
    dir: Path | None = None
    max_captured: int = Field(256, ge=1, le=10_000)  # presets saved by capture (captured.toml)


SESSION_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class SessionSpec(Section):
    """One session's choices beside the daemon's config: what `POST /api/sessions` takes (every field optional,
    the daemon's config fills the rest) and what a `[[sessions.fixed]]` table declares. Names of files are not
    among them: a session renders the avatar and speech files the config names."""

    name: str | None = Field(None, pattern=SESSION_NAME)  # fixed sessions only; created ones get a random id
    avatar: Literal["demo", "flashavatar"] | None = None
    face: Literal["procedural", "diffposetalk"] | None = None
    audio: Literal["file", "microphone", "webrtc", "silence"] | None = None
    width: int | None = Field(None, ge=64, le=3840)
    height: int | None = Field(None, ge=64, le=2160)
    fps: Literal[25, 30, 60] | None = None
    idle: bool | None = None  # idle life (blink, gaze, sway) on or off
    # Record the session from its start, to a file the daemon names in `sessions.record_dir` (never one the
    # request names). Strict: only true or false, so a path or a word sent here is refused, not read as "yes".
    record: bool | None = Field(None, strict=True)

    def overrides(self) -> dict[str, Any]:
        """The config tables this spec changes (validated again with the rest of the config)."""
        out: dict[str, Any] = {}
        if self.avatar is not None:
            out["avatar"] = {"kind": self.avatar}
        if self.face is not None:
            out["face"] = {"driver": self.face}
        if self.audio is not None:
            out["audio"] = {"source": self.audio}
        video = {k: v for k, v in (("width", self.width), ("height", self.height), ("fps", self.fps)) if v is not None}
        if video:
            out["video"] = video
        if self.idle is not None:
            out["idle"] = {"blink": self.idle, "gaze": self.idle, "sway": self.idle}
        return out


class SessionsConfig(Section):
    """How many avatars the daemon serves at once beside its default one (see docs/sessions.md)."""

    # Sessions at once, the default one included; "auto": measured at start from the default session's render
    # and face-driver cost per second of video.
    max: int | Literal["auto"] = "auto"
    retry_after_s: int = Field(30, ge=1, le=3600)  # what a refused creation is told to wait (Retry-After)
    fixed: list[SessionSpec] = Field(default_factory=list, max_length=64)  # made at start, never ended over HTTP
    # Where sessions' recordings go (`record = true`, POST /api/sessions/<id>/record), named by the daemon
    # "<session>-<UTC time>.mp4"; None: the per-user folder (bridge.runtime.recordings.default_record_dir, e.g.
    # ~/.local/share/avatar-bridge/recordings), made when the first recording starts.
    record_dir: Path | None = None
    # Sessions recording at once (the default session's outputs.record.path counts too); 0: none over HTTP.
    max_recordings: int = Field(4, ge=0, le=64)
    # From this many sessions showing one FlashAvatar checkpoint on, their frames that fall due together render
    # as one batch (one deformation pass, one gsplat call); fewer render each on its own. 0: never batch.
    batch_frames_from: int = Field(8, ge=0, le=256)

    @field_validator("max")
    @classmethod
    def _max(cls, v: int | str) -> int | str:
        if v != "auto" and not 1 <= int(v) <= 1024:
            raise ValueError("sessions.max must be 'auto' or a number of sessions in 1..1024")
        return v

    @model_validator(mode="after")
    def _named(self) -> SessionsConfig:
        names = [spec.name for spec in self.fixed]
        if any(name is None for name in names):
            raise ValueError("every [[sessions.fixed]] table needs a name (letters, digits, '_' or '-')")
        if len(set(names)) != len(names) or "default" in names:
            raise ValueError("[[sessions.fixed]] names must differ from each other and from 'default'")
        recording = sum(1 for spec in self.fixed if spec.record)
        if recording > self.max_recordings:
            raise ValueError(f"{recording} [[sessions.fixed]] tables set record = true, but sessions.max_recordings "
                             f"is {self.max_recordings}; raise it or record fewer sessions")
        return self


class Config(Section):
    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    face: FaceConfig = FaceConfig()
    avatar: AvatarConfig = AvatarConfig()
    pipeline: PipelineConfig = PipelineConfig()
    outputs: OutputsConfig = OutputsConfig()
    http: HttpConfig = HttpConfig()
    webrtc: WebRTCConfig = WebRTCConfig()
    osc: OscConfig = OscConfig()
    vmc: VmcConfig = VmcConfig()
    midi: MidiConfig = MidiConfig()
    idle: IdleConfig = IdleConfig()
    mixer: MixerConfig = MixerConfig()
    presets: PresetsConfig = PresetsConfig()
    sessions: SessionsConfig = SessionsConfig()


def _describe(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        given = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            field = str(err["loc"][-1])
            section = ".".join(str(p) for p in err["loc"][:-1]) or "the top level"
            lines.append(f"  {loc}: unknown setting {field!r} in {section}; check its spelling against the README")
        elif kind == "literal_error":
            lines.append(f"  {loc} = {given!r} is not allowed: {msg}")
        else:
            shown = "" if isinstance(given, dict) else f" = {given!r}"
            lines.append(f"  {loc}{shown}: {msg}")
    return "\n".join(lines)


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"environment override {'.'.join(path)}: {key} is not a section")
        node = child
    node[path[-1]] = value


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare string


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = dict(os.environ) if environ is None else environ
    data: dict[str, Any] = {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
            _set_path(data, path, _parse_env_value(raw))
    return data


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid onto `base`, tables merged key by key (later sources win)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Read, merge (file < environment < explicit overrides) and validate; raises ConfigError."""
    data: dict[str, Any] = {}
    origin = "the defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing TOML file to --config")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}; fix the syntax at that place") from exc
        base = path.parent
        data = _resolve_relative_paths(data, base)
    env = env_overrides(environ)
    if env:
        origin += " with AVATAR_BRIDGE__ environment overrides"
    data = merge_tables(merge_tables(data, env), overrides or {})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


_PATH_KEYS = {
    ("audio", "file"),
    ("avatar", "checkpoint"),
    ("avatar", "flame_model"),
    ("avatar", "flame_masks"),
    ("avatar", "flame_mesh"),
    ("avatar", "eyelids_dir"),
    ("avatar", "tracker_frame"),
    ("avatar", "shape"),
    ("avatar", "torso"),
    ("outputs", "snapshot_dir"),
    ("sessions", "record_dir"),
    ("midi", "map"),
    ("presets", "dir"),
}


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a config file are relative to the file, not to the working directory."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((base / Path(value).expanduser()).resolve()) if not value.startswith("~") else value
        return value

    for section, key in _PATH_KEYS:
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            node[key] = fix(node[key])
    avatar = data.get("avatar")
    if isinstance(avatar, dict):  # a background is a colour or a file: only a file is relative to the config
        if isinstance(avatar.get("background"), str) and not avatar["background"].strip().startswith("#"):
            avatar["background"] = fix(avatar["background"])
        table = avatar.get("backgrounds")
        if isinstance(table, dict):
            for name, value in table.items():
                if isinstance(value, str) and not value.strip().startswith("#"):
                    table[name] = fix(value)
    for sub in ("diffposetalk",):
        node = data.get("face", {}).get(sub) if isinstance(data.get("face"), dict) else None
        if isinstance(node, dict):
            for key in ("checkpoint", "stats", "style", "shape"):
                if key in node:
                    node[key] = fix(node[key])
    rec = data.get("outputs", {}).get("record") if isinstance(data.get("outputs"), dict) else None
    if isinstance(rec, dict) and "path" in rec:
        rec["path"] = fix(rec["path"])
    return data
