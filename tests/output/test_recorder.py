from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from bridge.core.errors import UserError
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk, StreamInfo, VideoFrame
from drivers.output.png import encode_png
from drivers.output.recorder import RecorderSink
from tests.conftest import read_recording


def test_audio_after_the_last_frame_is_cut_and_missing_audio_is_silence(tmp_path: Path) -> None:
    sink = RecorderSink(tmp_path / "short.mp4")
    sink.open(StreamInfo(32, 32, 25))
    sink.write_audio(AudioChunk(np.full(5 * SAMPLE_RATE, 0.1, np.float32), 0.0))  # before any frame: dropped
    for index in range(25):
        sink.write_video(VideoFrame(rgb=np.zeros((32, 32, 3), np.uint8), pts=index / 25, index=index))
    sink.write_audio(AudioChunk(np.full(SAMPLE_RATE // 2, 0.1, np.float32), 0.25))
    sink.close()
    rec = read_recording(tmp_path / "short.mp4")
    assert rec.frames == 25
    assert rec.audio_seconds == pytest.approx(rec.synced_audio_seconds(25), abs=1e-6)
    assert np.abs(rec.audio[: SAMPLE_RATE // 8]).max() < 0.02  # leading silence
    assert np.abs(rec.audio[int(0.4 * SAMPLE_RATE) : int(0.6 * SAMPLE_RATE)]).mean() > 0.05


def test_bad_target_is_explained(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        RecorderSink(tmp_path / "no" / "such" / "dir.mp4")


def test_png_encoding_round_trips() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    data = encode_png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    codec = av.CodecContext.create("png", "r")
    frames = [f for p in codec.parse(data) for f in codec.decode(p)] or codec.decode(av.Packet(data))
    np.testing.assert_array_equal(frames[0].to_ndarray(format="rgb24"), rgb)
