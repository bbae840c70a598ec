from __future__ import annotations

from pathlib import Path

import numpy as np

from bridge.core.interfaces import SAMPLE_RATE, AudioChunk
from drivers.audio.decode import decode_audio
from drivers.face.procedural import ProceduralFaceDriver


def run(driver: ProceduralFaceDriver, audio: np.ndarray, chunk: int = 320) -> list:
    out = []
    driver.reset(10.0)
    for i in range(0, len(audio), chunk):
        out += driver.push(AudioChunk(audio[i : i + chunk], 10.0 + i / SAMPLE_RATE))
    return out + driver.flush()


def test_silence_keeps_the_mouth_closed() -> None:
    frames = run(ProceduralFaceDriver(), np.zeros(SAMPLE_RATE * 2, np.float32))
    assert len(frames) == 50
    assert max(abs(f.jaw[0]) for f in frames) == 0.0


def test_speech_opens_and_closes_the_mouth_with_the_syllables(speechlike: Path) -> None:
    audio = decode_audio(speechlike)
    frames = run(ProceduralFaceDriver(pucker_channel=3), audio)
    assert len(frames) == 50
    jaw = np.array([f.jaw[0] for f in frames])
    # The test signal is on for 40 % of each 0.4 s period: the jaw follows that 2.5 Hz rhythm.
    t = (np.arange(50) + 0.5) / 25
    on = np.sin(2 * np.pi * 2.5 * t) > 0.2
    assert jaw[on].mean() > 3 * jaw[~on].mean() and jaw.max() > 0.15
    assert frames[3].audio_time == 10.0 + 3 / 25 and frames[3].pts == frames[3].audio_time


def test_latency_is_under_one_frame_and_chunking_does_not_matter(speechlike: Path) -> None:
    driver = ProceduralFaceDriver(fps=25)
    assert driver.latency < 0.040
    audio = decode_audio(speechlike)
    a = np.array([f.jaw[0] for f in run(ProceduralFaceDriver(), audio, chunk=320)])
    b = np.array([f.jaw[0] for f in run(ProceduralFaceDriver(), audio, chunk=1111)])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_frame_is_emitted_as_soon_as_its_window_is_complete() -> None:
    driver = ProceduralFaceDriver(fps=25)
    driver.reset(0.0)
    needed = round(driver.latency * SAMPLE_RATE)  # samples after the start of frame 0's slot
    assert driver.push(AudioChunk(np.zeros(needed - 1, np.float32), 0.0)) == []
    assert len(driver.push(AudioChunk(np.zeros(1, np.float32), (needed - 1) / SAMPLE_RATE))) == 1
