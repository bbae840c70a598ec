"""Shared test helpers: real media made on the fly (no binary fixtures needed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# As the CLI does (bridge.cli): torch's OpenMP workers sleep while waiting, so a loaded machine slows the
# tests' CPU rendering in proportion to the load instead of 10-20x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# What the daemon writes for the user (captured presets, learned MIDI maps, calibrations) stays in a folder of
# this test session, for the tests and the daemons they start, never in the home directory.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="avatar-bridge-test-data-")

import av
import numpy as np
import pytest

from bridge.controls.presets import presets_dir as shipped_presets
from drivers.output.recorder import AAC_FRAME

REPO = Path(__file__).resolve().parents[1]


def write_audio_file(path: Path, samples: np.ndarray, rate: int, channels: int = 1, codec: str | None = None) -> Path:
    """Encode float samples (n,) or (n, channels) to a real audio file with PyAV."""
    data = np.asarray(samples, np.float32)
    if data.ndim == 1:
        data = np.repeat(data[:, None], channels, axis=1)
    codec = codec or {"wav": "pcm_s16le", ".ogg": "libopus", "mp3": "mp3"}.get(path.suffix.lstrip("."), "pcm_s16le")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono" if data.shape[1] == 1 else "stereo"
        fmt = "s16" if codec == "pcm_s16le" else ("fltp" if codec != "libopus" else "flt")
        frame = av.AudioFrame.from_ndarray(
            (np.clip(data, -1, 1) * 32767).astype(np.int16).reshape(1, -1) if fmt == "s16"  # packed: interleaved
            else (data.T.copy() if fmt == "fltp" else data.reshape(1, -1)),
            format=fmt,
            layout=stream.layout.name,
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@dataclass
class Recording:
    """What a recorded file decodes to."""

    codecs: tuple[str, str]  # (video, audio)
    brightness: list[float]  # mean grey level of each decoded video frame
    audio: np.ndarray  # decoded mono samples at `sample_rate`
    sample_rate: int

    @property
    def frames(self) -> int:
        return len(self.brightness)

    @property
    def audio_seconds(self) -> float:
        return self.audio.size / self.sample_rate

    def synced_audio_seconds(self, fps: int) -> float:
        """How long the sound must decode to when it ends with the video: the video's length, rounded up to
        whole AAC frames because the encoder pads its last frame with silence."""
        samples = round(self.frames / fps * self.sample_rate)
        return -(-samples // AAC_FRAME) * AAC_FRAME / self.sample_rate


def read_recording(path: Path) -> Recording:
    with av.open(str(path)) as c:
        codecs = (c.streams.video[0].codec_context.name, c.streams.audio[0].codec_context.name)
        sample_rate = c.streams.audio[0].sample_rate
        brightness = [float(f.to_ndarray(format="gray").mean()) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return Recording(codecs, brightness, audio, sample_rate)


@pytest.fixture(autouse=True)
def fresh_mdns_resolver() -> Iterator[None]:
    """aioice keeps one mDNS resolver and its asyncio lock per process, bound to the first event loop that used
    them; every test has its own loop, so a later test's offer with mDNS candidates would fail on that lock."""
    yield
    import aioice.ice

    for name in ("lock", "protocol", "subscribers"):
        if hasattr(aioice.ice._mdns, name):
            delattr(aioice.ice._mdns, name)


@pytest.fixture
def speechlike(tmp_path: Path) -> Path:
    """A 2 s syllable-like signal (voiced bursts with pauses) at 44.1 kHz stereo WAV."""
    rate = 44100
    t = np.arange(int(2.0 * rate)) / rate
    envelope = (np.sin(2 * np.pi * 2.5 * t) > 0.2).astype(np.float32)
    voice = 0.4 * np.sin(2 * np.pi * 180 * t) + 0.2 * np.sin(2 * np.pi * 900 * t)
    return write_audio_file(tmp_path / "speech.wav", (voice * envelope).astype(np.float32), rate, channels=2)


@pytest.fixture
def presets_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped presets."""
    d = tmp_path / "presets"
    shutil.copytree(shipped_presets(), d)
    return d


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_program(name: str, apt_package: str, found: bool | None = None) -> None:
    """Go on only where `name` is installed (`found` defaults to `name` on PATH). CI installs every program the
    tests use (install/setup.sh --dev), so there a missing one fails the test with the install command; elsewhere
    the test is skipped with the same line. Only what CI cannot have (CUDA, /dev/video*, the ALSA sequencer, a
    sound card) may skip in CI, and that is not asked through here."""
    if found is None:
        found = shutil.which(name) is not None
    if found:
        return
    message = f"{name} is not installed (apt install {apt_package})"
    if in_ci():
        pytest.fail(f"{message}: CI installs it with install/setup.sh --dev", pytrace=False)
    pytest.skip(message)


def needs_program(name: str, apt_package: str, found: bool | None = None) -> pytest.MarkDecorator:
    """The mark form of `require_program` for a test or a module's `pytestmark`; checked when each test starts."""
    return pytest.mark.needs_program(name, apt_package, found=found)


def needs_golden(model: str, *names: str) -> pytest.MarkDecorator:
    """The mark form of `tests.golden_files.require` (fails in CI, skips elsewhere when a file is missing)."""
    return pytest.mark.needs_golden(model, *names)


def pytest_runtest_setup(item: pytest.Item) -> None:
    from tests.golden_files import require

    for mark in item.iter_markers("needs_program"):
        require_program(*mark.args, **mark.kwargs)
    for mark in item.iter_markers("needs_golden"):
        require(*mark.args)


def started_daemon(argv: list[str], cwd: Path, env: dict[str, str],
                   preexec: Callable[[], object] | None = None) -> tuple[subprocess.Popen[str], str]:
    """A daemon command (`python -m bridge.cli demo ...`) in a process, returned once it runs, with its base URL
    ("" without HTTP); `preexec` runs in the child before it starts (e.g. a limit on its files' size)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=preexec)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "running:" in line:
            found = re.search(r"http://[\d.:]+", line)
            return proc, found.group(0) if found else ""
    raise AssertionError(f"the daemon did not start (exit code {proc.wait()})")


def stopped_daemon(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str, float]:
    """Send `sig` to a daemon from `started_daemon`: (exit code, the rest of its stderr, seconds until it
    exited). Kills it if it is still there after 30 s."""
    assert proc.stderr is not None
    t0 = time.monotonic()
    try:
        proc.send_signal(sig)
        rest = proc.stderr.read()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, rest, time.monotonic() - t0


def slowest_render_s(url: str) -> float:
    """The 99th percentile of the render times of the daemon at `url` so far (its own figure, from /api/status):
    how long a render takes on this machine now, for bounds that must hold on a loaded machine too."""
    with urllib.request.urlopen(url + "/api/status", timeout=10) as r:
        stages = json.load(r)["stages"]
    return float(stages.get("render", {}).get("p99_ms", 0.0)) / 1000.0


def recorder_frames(url: str) -> int:
    """Frames the recorder of the daemon at `url` has written (its own count, from /api/status)."""
    with urllib.request.urlopen(url + "/api/status", timeout=10) as r:
        stages = json.load(r)["stages"]
    return int(stages.get("sink:recorder", {}).get("count", 0))
