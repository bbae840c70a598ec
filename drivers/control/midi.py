"""MIDI control surface (mido + python-rtmidi): faders, knobs, pads and pitch bend → any control.

A map (TOML, `[[binding]]` entries) says, per message kind (cc, note, pitchbend), channel and number, which
control target it drives, over which range, with which curve, and how: ``absolute`` faders/knobs,
``relative`` encoders (twos, signed_bit or offset encodings), ``momentary`` buttons (held while pressed, via
the mixer's hold/), ``toggle`` and ``trigger`` (blink, presets). Learn mode binds the next moved control to
a target. Ports are polled so devices can be plugged in at any time; when no MIDI backend is available
(no ALSA sequencer, no CoreMIDI...) the surface says so in `status()` and the daemon carries on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mido
import tomli_w

from bridge.controls.presets import user_presets_dir
from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import ControlEvent, ControlSink

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

KINDS = ("cc", "note", "pitchbend")
MODES = ("absolute", "relative", "momentary", "toggle", "trigger")
CURVES = ("linear", "exp", "log", "scurve")
ENCODINGS = ("twos", "signed_bit", "offset")
MOMENTARY_TARGETS = ("blink", "reset")
ARITY = {"gaze": 2, "head": 3, "flame/jaw": 3, "flame/eyes": 6, "flame/neck": 3, "flame/head": 3, "flame/eyelids": 2}
DEFAULT_MAP = user_presets_dir() / "midi" / "learned.toml"  # what `midi learn` writes: the user's, not the install's


class MidiError(UserError, RuntimeError):
    """MIDI is unavailable or misconfigured; the message says what to do."""


@dataclass
class Binding:
    kind: str
    target: str
    control: int | None = None  # CC or note number; None for pitch bend
    channel: int | None = None  # 0-15; None: any channel
    min: float = 0.0
    max: float = 1.0
    curve: str = "linear"
    mode: str = ""  # empty: absolute for cc/pitch bend, momentary for notes (trigger for blink/reset)
    encoding: str = "twos"
    step: float = 0.01
    arg: int = 0  # which value of a multi-value target (gaze x = 0, y = 1)
    fade: float | None = None

    def __post_init__(self) -> None:
        if not self.mode:
            self.mode = default_mode(self.kind, self.target)
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} (use {', '.join(KINDS)})")
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} (use {', '.join(MODES)})")
        if self.curve not in CURVES:
            problems.append(f"curve {self.curve!r} (use {', '.join(CURVES)})")
        if self.encoding not in ENCODINGS:
            problems.append(f"encoding {self.encoding!r} (use {', '.join(ENCODINGS)})")
        if self.kind != "pitchbend" and (self.control is None or not 0 <= self.control <= 127):
            problems.append("control must be a CC/note number 0-127")
        if self.channel is not None and not 0 <= self.channel <= 15:
            problems.append("channel must be 0-15 (MIDI channels 1-16)")
        if not self.target or len(self.target) > 200:
            problems.append("target must name a control (see docs/controls.md)")
        if not 0 <= self.arg < 8:
            problems.append("arg must be 0-7")
        if problems:
            raise MidiError(f"MIDI binding for {self.target!r}: bad " + "; bad ".join(problems))

    def key(self) -> tuple[str, int | None, int | None]:
        return (self.kind, self.channel, self.control)

    def to_toml(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def default_mode(kind: str, target: str) -> str:
    if kind == "note":
        return "trigger" if target in MOMENTARY_TARGETS else "momentary"
    return "absolute"


def shape(x: float, curve: str) -> float:
    x = min(max(x, 0.0), 1.0)
    if curve == "exp":
        return x * x
    if curve == "log":
        return x**0.5
    if curve == "scurve":
        return x * x * (3 - 2 * x)
    return x


def relative_delta(value: int, encoding: str) -> int:
    if encoding == "offset":
        return value - 64
    if encoding == "signed_bit":
        return -(value - 64) if value >= 64 else value
    return value - 128 if value >= 64 else value  # two's complement


@dataclass
class MidiMap:
    bindings: list[Binding] = field(default_factory=list)
    device: str | None = None
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> MidiMap:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MidiError(f"MIDI map {path} does not exist; create it with 'avatar-bridge midi learn'") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MidiError(f"MIDI map {path} is not valid TOML: {exc}") from None
        entries = data.get("binding", [])
        if not isinstance(entries, list):
            raise MidiError(f"MIDI map {path}: use [[binding]] tables")
        bindings = []
        for i, e in enumerate(entries):
            try:
                bindings.append(Binding(**e))
            except TypeError as exc:
                raise MidiError(f"MIDI map {path}, binding {i + 1}: {exc}") from None
            except MidiError as exc:
                raise MidiError(f"MIDI map {path}, binding {i + 1}: {exc}") from None
        return cls(bindings, data.get("device", {}).get("name"), Path(path))

    def save(self, path: Path | None = None) -> Path:
        path = Path(path or self.path or DEFAULT_MAP)
        data: dict[str, Any] = {"binding": [b.to_toml() for b in self.bindings]}
        if self.device:
            data["device"] = {"name": self.device}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(tomli_w.dumps(data).encode())
        tmp.replace(path)
        self.path = path
        return path

    def bind(self, binding: Binding) -> None:
        """Add a binding, replacing one on the same control and argument."""
        self.bindings = [b for b in self.bindings if not (b.key() == binding.key() and b.arg == binding.arg)]
        self.bindings.append(binding)


def describe(msg: mido.Message) -> tuple[str, int, int | None] | None:
    """(kind, channel, number) of a mappable message, else None."""
    if msg.type == "control_change":
        return ("cc", msg.channel, msg.control)
    if msg.type in ("note_on", "note_off"):
        return ("note", msg.channel, msg.note)
    if msg.type == "pitchwheel":
        return ("pitchbend", msg.channel, None)
    return None


class MidiMapper:
    """Turns MIDI messages into control events through a map; also runs learn mode."""

    def __init__(self, midi_map: MidiMap | None = None) -> None:
        self.map = midi_map or MidiMap()
        self._relative: dict[tuple[str, int | None, int | None, int], float] = {}
        self._multi: dict[str, list[float]] = {}
        self._parser = mido.Parser()
        self.counters = {"messages": 0, "mapped": 0, "unmapped": 0, "ignored": 0, "garbage": 0}
        self.learning: str | None = None  # "" = learning without a target yet
        self.last_touched: tuple[str, int, int | None] | None = None
        self.learned: list[dict[str, Any]] = []

    # ---- learn ---------------------------------------------------------------------------------------
    def learn_start(self, target: str | None = None) -> None:
        self.learning = target or ""

    def learn_stop(self) -> None:
        self.learning = None

    def learn_assign(self, target: str, **options: Any) -> Binding:
        """Bind the control moved last to `target` (panel flow: move a fader, then pick a control)."""
        if self.last_touched is None:
            raise MidiError("no MIDI control was moved yet; move a fader or press a pad first")
        kind, channel, number = self.last_touched
        b = Binding(kind=kind, target=target, control=number, channel=channel, **options)
        self.map.bind(b)
        self.learned.append(b.to_toml())
        self.learning = None
        if self.map.path is not None:
            self.map.save()
        return b

    def status(self) -> dict[str, Any]:
        return {"learning": self.learning is not None, "target": self.learning or None,
                "last_touched": list(self.last_touched) if self.last_touched else None,
                "learned": self.learned[-10:], "bindings": len(self.map.bindings),
                "map": str(self.map.path) if self.map.path else None, "counters": dict(self.counters)}

    # ---- mapping -------------------------------------------------------------------------------------
    def feed_bytes(self, data: Iterable[int]) -> list[ControlEvent]:
        """Raw MIDI bytes (possibly garbage) → events; bytes that do not form messages are counted."""
        out: list[ControlEvent] = []
        clean = []
        for b in data:
            if isinstance(b, int) and 0 <= b <= 255:
                clean.append(b)
            else:
                self.counters["garbage"] += 1
        self._parser.feed(clean)
        for msg in self._parser:
            out.extend(self.handle(msg))
        return out

    def handle(self, msg: mido.Message) -> list[ControlEvent]:
        self.counters["messages"] += 1
        what = describe(msg)
        if what is None:
            self.counters["ignored"] += 1
            return []
        if msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
            pressed, raw = False, 0.0
        elif msg.type == "pitchwheel":
            pressed, raw = True, (msg.pitch + 8192) / 16383.0
        elif msg.type == "note_on":
            pressed, raw = True, msg.velocity / 127.0
        else:
            pressed, raw = msg.value >= 64, msg.value / 127.0
        if self.learning is not None and pressed:
            self.last_touched = what
            if self.learning:
                self.learn_assign(self.learning)
            return []
        if pressed:
            self.last_touched = what
        events: list[ControlEvent] = []
        kind, channel, number = what
        for b in self.map.bindings:
            if b.kind != kind or (b.channel is not None and b.channel != channel) or b.control != number:
                continue
            ev = self._event(b, msg, pressed, raw)
            if ev is not None:
                events.append(ev)
        self.counters["mapped" if events else "unmapped"] += 1
        return events

    def _event(self, b: Binding, msg: mido.Message, pressed: bool, raw: float) -> ControlEvent | None:
        if b.mode == "momentary":
            if msg.type == "control_change" or msg.type.startswith("note"):
                return ControlEvent(f"hold/{b.target}", (1.0 if pressed else 0.0, *_fade(b)), source="midi")
            return None
        if b.mode in ("toggle", "trigger"):
            if not pressed:
                return None
            if b.mode == "toggle":
                return ControlEvent(f"toggle/{b.target}", _fade(b), source="midi")
            return ControlEvent(b.target, (b.max, *_fade(b)) if b.target not in MOMENTARY_TARGETS else (),
                                source="midi")
        if b.mode == "relative" and msg.type == "control_change":
            key = (b.kind, b.channel, b.control, b.arg)
            x = self._relative.get(key, 0.0) + relative_delta(msg.value, b.encoding) * b.step
            x = min(max(x, 0.0), 1.0)
            self._relative[key] = x
        else:
            x = raw
        value = b.min + (b.max - b.min) * shape(x, b.curve)
        fade = _fade(b) or (0.0,)
        arity = max(ARITY.get(b.target, 1), b.arg + 1)
        if arity == 1:
            return ControlEvent(b.target, (value, *fade), source="midi")
        # Multi-value targets (gaze x/y on two knobs): keep the other values where they were.
        vals = self._multi.setdefault(b.target, [0.0] * arity)
        vals[b.arg] = value
        return ControlEvent(b.target, (*vals, *fade), source="midi")


def _fade(b: Binding) -> tuple[float, ...]:
    return () if b.fade is None else (b.fade,)

ALSA_SEQUENCER = "/dev/snd/seq"  # where rtmidi's Linux backend opens MIDI


def input_names() -> list[str]:
    """Input port names; MidiError with the reason when no backend works."""
    try:
        if sys.platform.startswith("linux") and not os.path.exists(ALSA_SEQUENCER):
            # Asked anyway, ALSA prints its own complaint on stderr before rtmidi raises.
            raise OSError(f"{ALSA_SEQUENCER} does not exist")
        return list(mido.get_input_names())
    except Exception as exc:  # rtmidi raises its own SystemError without an ALSA sequencer
        raise MidiError(
            f"no MIDI backend available ({str(exc).strip() or type(exc).__name__}); on Linux load the ALSA "
            "sequencer (sudo modprobe snd-seq) or run where /dev/snd/seq exists; set midi.enabled = false "
            "to silence this"
        ) from None


class MidiControlSurface:
    """Opens every matching input port (and ones plugged in later) and emits mapped events."""

    name = "midi"

    def __init__(self, mapper: MidiMapper, port_filter: str | None = None, poll_interval: float = 2.0) -> None:
        self.mapper = mapper
        self.port_filter = port_filter
        self.poll_interval = poll_interval
        self.error: str | None = None
        self.backend_missing = False
        self.ports: dict[str, Any] = {}
        self._emit: ControlSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, config: Config) -> MidiControlSurface:
        """The [midi] section: its map file (else the learned one, else an empty map) and input port filter."""
        cfg = config.midi
        path = cfg.map
        if path is not None:
            midi_map = MidiMap.load(path)
        elif DEFAULT_MAP.is_file():
            midi_map = MidiMap.load(DEFAULT_MAP)
        else:
            midi_map = MidiMap(path=DEFAULT_MAP)
        return cls(MidiMapper(midi_map), cfg.input)

    async def start(self, emit: ControlSink) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        await self._scan()
        self._task = asyncio.create_task(self._poll(), name="midi-hotplug")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for port in self.ports.values():
            with contextlib.suppress(Exception):  # a device unplugged while closing
                port.close()
        self.ports.clear()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.backend_missing:
                return  # no sequencer on this machine: polling would only repeat the same error
            await self._scan()

    async def _scan(self) -> None:
        try:
            names = await asyncio.to_thread(input_names)
        except MidiError as exc:
            if self.error != str(exc):
                log.warning("midi: %s", exc)
            self.error = str(exc)
            self.backend_missing = True
            return
        self.error = None
        wanted = [n for n in names if not self.port_filter or self.port_filter.lower() in n.lower()]
        for gone in [n for n in self.ports if n not in names]:
            log.info("midi: %s disconnected", gone)
            with contextlib.suppress(Exception):
                self.ports.pop(gone).close()
        for n in wanted:
            if n not in self.ports:
                try:
                    self.ports[n] = mido.open_input(n, callback=self._on_message)
                    log.info("midi: listening to %s", n)
                except Exception as exc:
                    log.warning("midi: cannot open %s: %s", n, exc)

    def _on_message(self, msg: mido.Message) -> None:
        """rtmidi thread → the asyncio loop, where mapping and learn state live."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self.dispatch, msg)

    def dispatch(self, msg: mido.Message) -> None:
        try:
            events = self.mapper.handle(msg)
        except Exception as exc:
            self.mapper.counters["garbage"] += 1
            log.debug("midi: bad message %r: %s", msg, exc)
            return
        if self._emit is not None:
            for ev in events:
                ev.time = time.monotonic()
                self._emit(ev)

    def status(self) -> dict[str, Any]:
        return {"error": self.error, "ports": sorted(self.ports), **self.mapper.status()}
