"""Measuring the delayed voice on a real sound server: the input is noise bursts at irregular gaps; a
recording (parec, a client independent of ours) is stamped on the daemon's media clock, and each burst heard
is paired with the burst captured before it. Counting bursts is robust where waveform correlation is not:
the sound server resamples, a busy machine drops a block, and the output moves by a few ms to keep time."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.interfaces import SAMPLE_RATE
from tests.conftest import write_audio_file
from tests.output.pulse_server import PulseServer

MAX_DELAY = 1.5  # seconds: the delays searched for the input in the recording
QUIET = SAMPLE_RATE // 50  # samples of quiet before a burst counts as one (20 ms)


def bursts_file(tmp_path: Path) -> Path:
    """6 s of noise bursts at irregular gaps (the file loops, so the pattern repeats only 6 s later, far
    outside the delays searched)."""
    rng = np.random.default_rng(7)
    audio = np.zeros(6 * SAMPLE_RATE, np.float32)
    at = 0
    while at < audio.size:
        length = int(rng.integers(800, 2400))
        audio[at : at + length] = rng.uniform(-0.5, 0.5, min(length, audio.size - at))
        at += length + int(rng.integers(1200, 4000))
    return write_audio_file(tmp_path / "bursts.wav", audio, SAMPLE_RATE)


class Recording:
    """parec from a source at 16 kHz; each read is stamped on the daemon's media clock."""

    def __init__(self, server: PulseServer, device: str, now: Any) -> None:
        self.now = now
        self.proc = subprocess.Popen(
            ["parec", f"--device={device}", "--format=float32le", f"--rate={SAMPLE_RATE}", "--channels=1", "--raw",
             "--latency-msec=10"], env=server.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.chunks: list[bytes] = []
        self.reads: list[tuple[float, int]] = []  # (media time after the read, samples read so far)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd, total = self.proc.stdout.fileno(), 0
        while True:
            data = os.read(fd, 640)
            if not data:
                return
            total += len(data)
            self.chunks.append(data)
            self.reads.append((self.now(), total // 4))

    def samples(self) -> int:
        return self.reads[-1][1] if self.reads else 0

    def stop(self) -> tuple[np.ndarray, float]:
        """The samples and the media time of the first one (the earliest-read bound: least scheduling lag)."""
        self.proc.terminate()
        self.proc.wait(10)
        self._thread.join(5)
        data = b"".join(self.chunks)
        samples = np.frombuffer(data[: len(data) // 4 * 4], np.float32)
        start = min(t - n / SAMPLE_RATE for t, n in self.reads)
        return samples, start


def onsets(samples: np.ndarray, start: float) -> np.ndarray:
    """Media times at which a burst begins: the first loud sample after at least 20 ms of quiet (ending a
    couple of ms before it, since the sound server's resampler ramps the edge)."""
    quiet = np.convolve(np.abs(samples) < 0.02, np.ones(QUIET), mode="full")[: samples.size] >= QUIET - 0.5
    guard = SAMPLE_RATE // 500
    idx = np.flatnonzero((np.abs(samples[guard:]) > 0.1) & quiet[:-guard]) + guard
    first = idx[np.diff(idx, prepend=-QUIET) >= QUIET]
    return start + first / SAMPLE_RATE


def measured_delays(recorded: np.ndarray, rec_start: float, captured: list[Any],
                    want: float) -> tuple[np.ndarray, int]:
    """For each burst heard in the recording, how long after its capture (seconds), and how many captured
    bursts should have been heard at `want` seconds. Every pairing of a recorded burst with an earlier captured
    one (up to MAX_DELAY) votes; the true delay collects one vote per burst, the wrong pairings scatter. The
    delays returned are the pairings within 20 ms of the winning 2 ms bin (the output keeps time by moving a
    few ms at once)."""
    base = min(c.pts for c in captured)
    end = max(c.pts + c.samples.size / SAMPLE_RATE for c in captured)
    reference = np.zeros(int(round((end - base) * SAMPLE_RATE)) + 1, np.float32)
    for c in captured:
        i = int(round((c.pts - base) * SAMPLE_RATE))
        reference[i : i + c.samples.size] = c.samples[: reference.size - i]
    heard, said = onsets(recorded, rec_start), onsets(reference, base)
    due = said + want
    expected = int(np.count_nonzero((due > rec_start + 0.03) & (due < rec_start + recorded.size / SAMPLE_RATE - 0.03)))
    pairs = (heard[:, None] - said[None, :]).ravel()
    pairs = pairs[(pairs >= 0) & (pairs <= MAX_DELAY)]
    if pairs.size == 0:
        return pairs, expected
    votes = np.bincount(np.round(pairs / 0.002).astype(int))
    mode = float(np.argmax(votes)) * 0.002
    return np.asarray(pairs[np.abs(pairs - mode) <= 0.020]), expected


TOLERANCE_MS = 20.0  # how far the delay heard may be from the one asked for, on a calm machine


async def heard_delay_ms(daemon: Any, server: PulseServer, source: str, want_ms: float, seconds: float = 4.0) -> float:
    """Record `source` for `seconds` while collecting what the daemon captured; check that most bursts said
    meanwhile are heard at one delay (a busy machine may lose one or two) and that the delay is `want_ms`
    within TOLERANCE_MS, or within twice the spread of the bursts' own delays when this machine is busier
    than that (the spread is what the load did to this recording); return the delay in ms."""
    captured: list[Any] = []
    sub = daemon.audio_in.subscribe(maxsize=1000)
    recording = Recording(server, source, daemon.clock.now)
    try:
        deadline = daemon.loop.time() + 60
        while recording.samples() < seconds * SAMPLE_RATE:  # the input from before parec starts until it ends
            assert daemon.loop.time() < deadline, f"parec recorded {recording.samples()} samples in 60 s"
            chunk = await daemon.loop.run_in_executor(None, sub.get, 1.0)
            if chunk is not None:
                captured.append(chunk)
    finally:
        sub.close()
        recorded, rec_start = recording.stop()
    assert np.abs(recorded).max() > 0.1, f"{source} is silent"
    delays, expected = measured_delays(recorded, rec_start, captured, want_ms / 1000)
    assert expected >= 10, f"the recording spans only {expected} bursts"
    assert delays.size >= 0.7 * expected, f"only {delays.size} of {expected} bursts heard at one delay ({np.round(delays * 1000, 1)} ms)"
    heard = float(np.median(delays)) * 1000
    spread = float(np.percentile(delays, 90) - np.percentile(delays, 10)) * 1000
    tolerance = max(TOLERANCE_MS, 2 * spread)
    assert abs(heard - want_ms) <= tolerance, (f"heard {heard:.1f} ms late, want {want_ms} ms within {tolerance:.1f} ms "
                                               f"(bursts spread over {spread:.1f} ms); {daemon.passthrough.describe()}")
    return heard
