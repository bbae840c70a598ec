"""A virtual microphone on Linux: a PulseAudio/PipeWire null sink that the delayed voice plays into, and a
source remapped from its monitor that call apps list as "Avatar Bridge Mic".

Made with `pactl load-module` (PulseAudio and PipeWire's pulse server both implement module-null-sink and
module-remap-source) when `outputs.passthrough.create = true`, and unloaded again on exit. Each module
carries its owner (`avatar_bridge.owner=PID.START`: the process id and its start time, so a reused id is not
taken for the owner) in its properties. Modules of ours whose owner is gone (a daemon that was killed, or
one that could not reach a hung server on exit) are unloaded before making new ones, so restarts never stack
up copies; a microphone whose owner still runs belongs to that daemon and is left alone.

Unloading on exit waits for the server only REMOVE_WAIT_S per call: a hung server is reported and the
modules stay loaded for the next start to clean up.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from bridge.core.config import Config
from bridge.core.errors import UserError
from drivers.output.pulse import HUNG_FIX

log = logging.getLogger(__name__)

SINK = "avatar_bridge_mic_sink"
SOURCE = "avatar_bridge_mic"
MIC_NAME = "Avatar Bridge Mic"
RATE = 48_000
TIMEOUT = 10.0  # seconds for one pactl call
REMOVE_WAIT_S = 0.6  # seconds for one pactl call while the daemon stops
OWNER = "avatar_bridge.owner"
OWNER_MARK = re.compile(rf"{re.escape(OWNER)}=(\d+)\.(\d+)")


def _started(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks after boot, /proc/PID/stat field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    return int(fields[19]) if len(fields) > 19 else None


Owner = tuple[int, int]  # (process id, its start time)


def this_process() -> Owner:
    pid = os.getpid()
    return pid, _started(pid) or 0


def owner_alive(owner: Owner) -> bool:
    """Whether the owner still runs (the same process, not another that got its id since)."""
    pid, started = owner
    return _started(pid) == started


class VirtualMicError(UserError):
    pass


def pactl(*args: str, timeout: float = TIMEOUT) -> str:
    """Run pactl; its output, or a VirtualMicError that says what to do."""
    exe = shutil.which("pactl")
    if exe is None:
        raise VirtualMicError("pactl is not installed, so the virtual microphone cannot be made; install it "
                              "(Debian/Ubuntu: sudo apt install pulseaudio-utils) or set outputs.passthrough.create "
                              "= false")
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise VirtualMicError(f"pactl {args[0]} did not answer within {timeout:g} s; {HUNG_FIX}") from exc
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

    def _ours(self) -> list[tuple[int, Owner | None]]:
        """Modules loaded for our sink and source (by an earlier run or another daemon too), newest first,
        each with its owner mark (None: made by a version that did not mark its modules)."""
        found = []
        for line in pactl("list", "short", "modules").splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and (f"sink_name={self.sink} " in fields[2] + " "
                                     or f"source_name={self.source} " in fields[2] + " "):
                mark = OWNER_MARK.search(fields[2])
                found.append((int(fields[0]), (int(mark.group(1)), int(mark.group(2))) if mark else None))
        return sorted(found, reverse=True)

    def create(self) -> None:
        pactl("info")  # a clear error when there is no server
        ours = self._ours()
        running = [owner for _, owner in ours if owner is not None and owner_alive(owner)]
        if running:
            raise VirtualMicError(f"the virtual microphone {self.name!r} belongs to another running daemon "
                                  f"(process {running[0][0]}); stop that one first, or set "
                                  "outputs.passthrough.create = false here")
        for module, owner in ours:
            log.info("unloading module %d left over from an earlier run%s", module,
                     f" (process {owner[0]}, which has ended)" if owner else "")
            pactl("unload-module", str(module))
        pid, started = this_process()
        mark = f"{OWNER}={pid}.{started}"
        self.modules.append(int(pactl(
            "load-module", "module-null-sink", f"sink_name={self.sink}",
            f"sink_properties='device.description=\"{self.name} (voice in)\" {mark}'",
            f"rate={RATE}", "channels=1", "channel_map=mono").strip()))
        try:
            self.modules.append(int(pactl(
                "load-module", "module-remap-source", f"master={self.sink}.monitor", f"source_name={self.source}",
                f"source_properties='device.description=\"{self.name}\" {mark}'", "channels=1",
                "channel_map=mono").strip()))
        except Exception:
            self.remove()
            raise
        log.info("created the virtual microphone %r (source %s, fed through sink %s)", self.name, self.source,
                 self.sink)

    def remove(self) -> None:
        """Unload what `create` loaded, waiting REMOVE_WAIT_S per module at most: a hung server is said in
        the log and its modules are left for the next start (their owner, this process, will be gone)."""
        modules, self.modules = self.modules, []
        for n, module in enumerate(reversed(modules)):  # the source before the sink it reads
            try:
                pactl("unload-module", str(module), timeout=REMOVE_WAIT_S)
            except UserError as exc:
                left = " ".join(str(m) for m in list(reversed(modules))[n:])
                log.warning("could not remove the virtual microphone (modules %s stay loaded until the next "
                            "start, or pactl unload-module each): %s", left, exc)
                return
