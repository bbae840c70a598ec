"""A virtual microphone on Linux: a PulseAudio/PipeWire null sink that the delayed voice plays into, and a
source remapped from its monitor that call apps list as "Avatar Bridge Mic".

Made with `pactl load-module` (PulseAudio and PipeWire's pulse server both implement module-null-sink and
module-remap-source) when `outputs.passthrough.create = true`, and unloaded again on exit. Modules of ours
left behind by a daemon that was killed are found by the sink's name and unloaded before making new ones,
so restarts never stack up copies.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from bridge.core.config import Config
from bridge.core.errors import UserError

log = logging.getLogger(__name__)

SINK = "avatar_bridge_mic_sink"
SOURCE = "avatar_bridge_mic"
MIC_NAME = "Avatar Bridge Mic"
RATE = 48_000
TIMEOUT = 10.0  # seconds for one pactl call


class VirtualMicError(UserError):
    pass


def pactl(*args: str) -> str:
    """Run pactl; its output, or a VirtualMicError that says what to do."""
    exe = shutil.which("pactl")
    if exe is None:
        raise VirtualMicError("pactl is not installed, so the virtual microphone cannot be made; install it "
                              "(Debian/Ubuntu: sudo apt install pulseaudio-utils) or set outputs.passthrough.create "
                              "= false")
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise VirtualMicError(f"pactl {args[0]} did not answer within {TIMEOUT:.0f} s; is the sound server "
                              "hung? (systemctl --user restart pipewire-pulse or pulseaudio -k)") from exc
    if done.returncode != 0:
        problem = (done.stderr or done.stdout).strip().splitlines()
        reason = problem[-1] if problem else f"exit {done.returncode}"
        if args[0] == "info" or "Connection refused" in reason or "Connection failure" in reason:
            raise VirtualMicError(f"no PulseAudio or PipeWire sound server answers ({reason}); start one "
                                  "(systemctl --user start pipewire-pulse, or pulseaudio --start) or set "
                                  "outputs.passthrough.create = false")
        raise VirtualMicError(f"pactl {' '.join(args)} failed: {reason}")
    return done.stdout


class VirtualMic:
    """The null sink + remapped source pair; `create()` makes them, `remove()` unloads what it made."""

    def __init__(self, name: str = MIC_NAME, sink: str = SINK, source: str = SOURCE) -> None:
        self.name, self.sink, self.source = name, sink, source
        self.modules: list[int] = []

    @classmethod
    def from_config(cls, config: Config) -> VirtualMic:
        """The microphone `outputs.passthrough.create` asks for (its names are fixed: call apps list it)."""
        return cls()

    @property
    def device(self) -> str:
        """The passthrough output that plays into the sink (drivers.output.passthrough's `pulse:` devices)."""
        return f"pulse:{self.sink}"

    def _ours(self) -> list[int]:
        """Modules loaded for our sink and source (by an earlier run too), newest first."""
        found = []
        for line in pactl("list", "short", "modules").splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and (f"sink_name={self.sink} " in fields[2] + " "
                                     or f"source_name={self.source} " in fields[2] + " "):
                found.append(int(fields[0]))
        return sorted(found, reverse=True)

    def create(self) -> None:
        pactl("info")  # a clear error when there is no server
        for module in self._ours():
            log.info("unloading module %d left over from an earlier run", module)
            pactl("unload-module", str(module))
        self.modules.append(int(pactl(
            "load-module", "module-null-sink", f"sink_name={self.sink}",
            f"sink_properties='device.description=\"{self.name} (voice in)\"'",
            f"rate={RATE}", "channels=1", "channel_map=mono").strip()))
        try:
            self.modules.append(int(pactl(
                "load-module", "module-remap-source", f"master={self.sink}.monitor", f"source_name={self.source}",
                f"source_properties='device.description=\"{self.name}\"'", "channels=1",
                "channel_map=mono").strip()))
        except Exception:
            self.remove()
            raise
        log.info("created the virtual microphone %r (source %s, fed through sink %s)", self.name, self.source,
                 self.sink)

    def remove(self) -> None:
        modules, self.modules = self.modules, []
        for module in reversed(modules):  # the source before the sink it reads
            try:
                pactl("unload-module", str(module))
            except UserError as exc:
                log.warning("could not remove the virtual microphone's module %d: %s", module, exc)
