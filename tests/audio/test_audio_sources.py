from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.core.errors import UserError
from bridge.core.interfaces import SAMPLE_RATE
from drivers.audio.decode import DecodedClips, decode_audio, demo_clip_path
from drivers.audio.file import FileAudioSource, SilenceAudioSource
from tests.conftest import write_audio_file


def drain(source: FileAudioSource | SilenceAudioSource, limit_s: float = 30.0) -> list:
    chunks = []
    deadline = time.monotonic() + limit_s
    while not source.finished and time.monotonic() < deadline:
        chunk = source.read(0.2)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def test_decodes_and_resamples_stereo_44k_wav(speechlike: Path) -> None:
    audio = decode_audio(speechlike)
    assert audio.dtype == np.float32
    assert abs(len(audio) - 2.0 * SAMPLE_RATE) <= 64
    # The 180 Hz fundamental survives resampling: its bin dominates the spectrum's low end.
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    freqs = np.fft.rfftfreq(16000, 1 / SAMPLE_RATE)
    assert abs(freqs[np.argmax(spectrum)] - 180) < 3


@pytest.mark.parametrize("suffix", ["ogg", "mp3"])
def test_decodes_compressed_formats(tmp_path: Path, suffix: str) -> None:
    t = np.arange(48000) / 48000
    path = write_audio_file(tmp_path / f"tone.{suffix}", 0.3 * np.sin(2 * np.pi * 440 * t), 48000,
                            codec="libopus" if suffix == "ogg" else "mp3")
    audio = decode_audio(path)
    assert abs(len(audio) - SAMPLE_RATE) < 2000 and 0.15 < np.abs(audio).max() < 0.5


def test_demo_clip_ships_and_is_speech() -> None:
    path = demo_clip_path()
    assert path.is_file() and path.stat().st_size < 400_000
    audio = decode_audio(path)
    assert 8 * SAMPLE_RATE < len(audio) < 20 * SAMPLE_RATE and np.abs(audio).max() > 0.1


def test_fast_file_source_delivers_everything_with_contiguous_pts(speechlike: Path) -> None:
    src = FileAudioSource(speechlike, realtime=False)
    src.start(time.monotonic)
    chunks = drain(src)
    src.stop()
    total = sum(len(c.samples) for c in chunks)
    assert abs(total - 2.0 * SAMPLE_RATE) <= 64
    for a, b in itertools.pairwise(chunks):
        assert b.pts == pytest.approx(a.end_pts, abs=1e-9)


def test_a_short_file_is_decoded_once_and_then_read(speechlike: Path, tmp_path: Path) -> None:
    clips = DecodedClips()
    first = list(clips.blocks(speechlike))
    assert len(first) > 1  # decoded block by block on the first pass
    again, third = list(clips.blocks(speechlike)), list(clips.blocks(speechlike))
    assert len(again) == 1 and again[0] is third[0] and not again[0].flags.writeable  # kept, not decoded
    np.testing.assert_array_equal(again[0], np.concatenate(first))
    np.testing.assert_array_equal(again[0], decode_audio(speechlike))
    # Edited, it decodes again: the new content plays.
    t = np.arange(24000) / 24000
    write_audio_file(speechlike, 0.3 * np.sin(2 * np.pi * 300 * t), 24000)
    edited = np.concatenate(list(clips.blocks(speechlike)))
    assert abs(len(edited) - SAMPLE_RATE) <= 64
    kept = list(clips.blocks(speechlike))
    assert len(kept) == 1
    np.testing.assert_array_equal(kept[0], edited)


def test_long_files_and_passes_cut_short_are_not_kept(speechlike: Path) -> None:
    short_memory = DecodedClips(max_seconds=0.5)
    for _ in range(2):
        assert len(list(short_memory.blocks(speechlike))) > 1  # 2 s: decoded every time
    clips = DecodedClips()
    blocks = clips.blocks(speechlike)
    next(blocks)
    blocks.close()  # a pass stopped early (the source stopped)
    assert len(list(clips.blocks(speechlike))) > 1


def test_a_looping_file_source_repeats_the_same_samples(speechlike: Path) -> None:
    src = FileAudioSource(speechlike, realtime=False, loop=True)
    src.start(time.monotonic)
    want = decode_audio(speechlike)
    got: list[np.ndarray] = []
    deadline = time.monotonic() + 30
    while sum(len(c) for c in got) < 3 * len(want) and time.monotonic() < deadline:
        chunk = src.read(0.2)
        if chunk is not None:
            assert chunk.samples.flags.writeable  # every chunk its own, even from a kept clip
            got.append(chunk.samples)
    src.stop()
    played = np.concatenate(got)
    for n in range(3):  # each pass, the first decoded and the later ones read, plays the file
        np.testing.assert_array_equal(played[n * len(want): (n + 1) * len(want)], want)


def test_realtime_source_stamps_chunks_when_their_audio_exists(speechlike: Path) -> None:
    clock_origin = time.monotonic()
    src = FileAudioSource(speechlike, realtime=True, chunk_ms=20)
    src.start(lambda: time.monotonic() - clock_origin)
    got = []
    for _ in range(10):
        chunk = src.read(1.0)
        assert chunk is not None
        got.append((chunk, time.monotonic() - clock_origin))
    src.stop()
    for chunk, arrived in got:
        assert len(chunk.samples) == 320
        assert arrived >= chunk.end_pts - 0.005  # never delivered before its last sample "was spoken"


def test_source_stops_promptly_and_silence_has_a_length() -> None:
    src = SilenceAudioSource(duration=0.5, realtime=False)
    src.start(time.monotonic)
    chunks = drain(src)
    assert sum(len(c.samples) for c in chunks) == 8000
    looping = FileAudioSource(demo_clip_path(), realtime=True, loop=True)
    looping.start(time.monotonic)
    t0 = time.monotonic()
    looping.stop()
    assert time.monotonic() - t0 < 1.0 and not any(t.name == "audio-file" and t.is_alive() for t in threading.enumerate())


def test_bad_files_give_actionable_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        FileAudioSource(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 3)
    with pytest.raises(UserError, match="could not be opened|damaged|no audio"):
        FileAudioSource(junk)
    video_only = tmp_path / "silent.mp4"
    import av

    with av.open(str(video_only), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(UserError, match="no audio stream"):
        FileAudioSource(video_only)


def test_microphone_errors_name_the_devices() -> None:
    import sounddevice as sd  # a dependency: never skipped

    from drivers.audio.microphone import find_device

    inputs = [d for d in sd.query_devices() if d["max_input_channels"] > 0]
    if inputs:
        with pytest.raises(UserError, match="no audio input device matches 'no-such-mic-xyz'; available"):
            find_device(sd, "no-such-mic-xyz", "input")
    else:
        with pytest.raises(UserError, match="no audio input device"):
            find_device(sd, None, "input")
    with pytest.raises(UserError, match="does not exist"):
        find_device(sd, 4242, "input")
