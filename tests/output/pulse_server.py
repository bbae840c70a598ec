"""A real PulseAudio server (Debian's `pulseaudio`) for the tests: a per-test user daemon, no hardware.

It runs in the foreground with its runtime dir, home and socket in a temporary folder, no default script
(`-n`, so no hardware or desktop modules are probed), anonymous access on its own unix socket, one null sink
as the default output, and never exits on idle. As root PulseAudio only warns ("not intended to be run as
root") and runs; `--system` is not needed. Clients find it through `PULSE_SERVER`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PULSEAUDIO = shutil.which("pulseaudio") or "/usr/bin/pulseaudio"
DEFAULT_SINK = "test_out"


def pulseaudio_available() -> bool:
    return Path(PULSEAUDIO).exists() and shutil.which("pactl") is not None and shutil.which("parec") is not None


@dataclass
class PulseServer:
    address: str  # for PULSE_SERVER
    env: dict[str, str]  # the environment a client needs
    log: Path
    pid: int  # of the server process (tests stop and continue it to play a hung server)

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10,
                              check=True).stdout

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_pulseaudio(folder: Path) -> Iterator[PulseServer]:
    """Start PulseAudio with its state in `folder`, wait until pactl reaches it, stop it."""
    folder.mkdir(parents=True, exist_ok=True)
    socket = folder / "native"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(folder), "HOME": str(folder), "PULSE_SERVER": f"unix:{socket}"}
    env.pop("DISPLAY", None)
    log = folder / "pulseaudio.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PULSEAUDIO, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes",
             "--log-target=stderr", "-F", "/dev/null",
             f"--load=module-native-protocol-unix socket={socket} auth-anonymous=1",
             f"--load=module-null-sink sink_name={DEFAULT_SINK} rate=48000 channels=1 channel_map=mono"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    server = PulseServer(f"unix:{socket}", env, log, proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PulseAudio did not start (exit {proc.returncode}):\n{server.log_tail()}")
            with contextlib.suppress(subprocess.SubprocessError):
                if "Server Name" in server.pactl("info"):
                    break
            time.sleep(0.1)
        yield server
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # a test may have left it stopped
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
