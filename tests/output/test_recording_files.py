"""Recording files as users get them: every format keeps lips and voice together, WebM and MOV keep the
avatar's alpha, and a full disk cuts the file back to what plays."""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from bridge.core.errors import UserError
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import SAMPLE_RATE, AudioChunk, StreamInfo, VideoFrame
from drivers.output.recorder import RecorderSink, RecordingFailed
from tests.commands.test_cli import cli, env
from tests.conftest import read_recording, recorder_frames, started_daemon

FORMATS = {".mp4": ("h264", "aac"), ".mkv": ("h264", "aac"), ".webm": ("vp9", "opus"), ".mov": ("prores", "pcm_s16le")}


def flash_and_click(path: Path, fps: int = 25, origin: float = 7.3) -> RecorderSink:
    """Three seconds of black with one white frame at 2.0 s, and a click in the sound at 2.0 s; frames 10-12
    never arrive (dropped upstream)."""
    sink = RecorderSink(path)
    sink.open(StreamInfo(64, 48, fps, extra={"origin": origin}))
    audio = np.zeros(3 * SAMPLE_RATE, np.float32)
    audio[2 * SAMPLE_RATE : 2 * SAMPLE_RATE + 400] = 0.8
    for i in range(0, len(audio), 320):
        sink.write_audio(AudioChunk(audio[i : i + 320], origin + i / SAMPLE_RATE))
    for index in range(75):
        if index not in (10, 11, 12):
            rgb = np.full((48, 64, 3), 255 if index == 50 else 0, np.uint8)
            sink.write_video(VideoFrame(rgb=rgb, pts=origin + index / fps, index=index))
    sink.close()
    return sink


@pytest.mark.parametrize("suffix", list(FORMATS))
def test_every_format_keeps_lips_and_voice_together(tmp_path: Path, suffix: str) -> None:
    sink = flash_and_click(tmp_path / f"out{suffix}")
    rec = read_recording(tmp_path / f"out{suffix}")
    assert rec.codecs == FORMATS[suffix]
    assert sink.frames_written == 75 and sink.frames_repeated == 3 and rec.frames == 75
    flash_t = int(np.argmax(rec.brightness)) / 25
    click_t = int(np.argmax(np.abs(rec.audio) > 0.4)) / rec.sample_rate
    assert flash_t == pytest.approx(2.0) and abs(click_t - flash_t) < 1.0 / 25
    assert abs(rec.audio_seconds - 3.0) <= 1024 / SAMPLE_RATE  # at most one codec frame of padding


def test_unknown_suffix_is_explained(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"\.avi is not a recording format.*\.mp4.*\.webm.*\.mov"):
        RecorderSink(tmp_path / "out.avi")


def decode_alpha(path: Path) -> list[np.ndarray]:
    """The alpha plane of every frame. FFmpeg's own VP9 decoder drops WebM's alpha (stored beside each
    frame as Matroska block additions); libvpx's decoder reads it. ProRes 4444 carries it in the frame."""
    planes = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        codec = av.CodecContext.create("libvpx-vp9", "r") if stream.codec_context.name == "vp9" else stream.codec_context
        for packet in c.demux(stream):
            for frame in codec.decode(packet):
                assert frame.format.name.startswith("yuva"), f"decoded as {frame.format.name}: no alpha"
                planes.append(frame.to_ndarray(format="rgba")[..., 3])
    return planes


# Largest alpha error allowed away from the outline: ProRes 4444 keeps 10 bits nearly losslessly; VP9 leaves
# faint coding noise (at most ~3 % opacity) near the outline, in the 8x8 blocks it crosses.
ALPHA_NOISE = {".mov": 0, ".webm": 8}


@pytest.mark.parametrize("suffix", [".webm", ".mov"])
def test_transparent_avatar_records_its_alpha(tmp_path: Path, suffix: str) -> None:
    from scipy.ndimage import distance_transform_edt

    from drivers.avatar.demo.avatar import DemoAvatar

    avatar = DemoAvatar(128, 128, renderer="cpu", device="cpu", transparent=True)
    sink = RecorderSink(tmp_path / f"alpha{suffix}")
    sink.open(StreamInfo(128, 128, 25, extra={"origin": 0.0}))
    rendered = []
    for index in range(10):  # the head turns and talks
        params = FaceParams.neutral()
        params.jaw[0], params.head[1] = 0.03 * (index % 4), 0.01 * index
        image = avatar.render(params)
        assert image.alpha is not None
        rendered.append(image.alpha)
        sink.write_video(VideoFrame(rgb=image.rgb, pts=index / 25, index=index, alpha=image.alpha))
    sink.close()
    assert sink.alpha
    planes = decode_alpha(tmp_path / f"alpha{suffix}")
    assert len(planes) == 10
    for decoded, alpha in zip(planes, rendered):
        away = distance_transform_edt(alpha == 0) > 8  # more than a coding block from the outline
        head = distance_transform_edt(alpha == 255) > 4
        assert away.sum() > 1000 and head.sum() > 1000  # the head covers part of the picture, not all of it
        assert decoded[away].max() <= ALPHA_NOISE[suffix] and np.mean(decoded[away] == 0) > 0.95
        assert decoded[head].min() >= 255 - ALPHA_NOISE[suffix] and np.median(decoded[head]) == 255


def test_opaque_formats_ignore_alpha(tmp_path: Path) -> None:
    sink = RecorderSink(tmp_path / "plain.mp4")
    sink.open(StreamInfo(32, 32, 25))
    rgb, alpha = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)
    sink.write_video(VideoFrame(rgb=rgb, pts=0.0, index=0, alpha=alpha))
    sink.close()
    assert not sink.alpha and read_recording(tmp_path / "plain.mp4").frames == 1


LIMIT = 1_500_000  # about five seconds of the noise below


def limit_file_size(limit: int) -> None:
    """What a full disk looks like to a writer: write() fails with EFBIG past `limit` bytes (SIGXFSZ is
    ignored so the process is not killed)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_full_disk_stops_recording_and_keeps_a_playable_file(tmp_path: Path) -> None:
    """In a child process whose files may not grow past 1.5 MB: the recorder stops with one sentence, and the
    file ends at its last complete second, which decodes without an error."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, initializer=limit_file_size, initargs=(LIMIT,)) as pool:
        written, message, size = pool.apply(_record_noise_until_failure, (str(tmp_path / "full.mp4"),))
    assert message.startswith(f"recording to {tmp_path / 'full.mp4'} stopped after ") and "size limit" in message
    assert "\n" not in message
    assert 0 < size <= LIMIT
    rec = read_recording(tmp_path / "full.mp4")  # decodes cleanly: no cut-off piece at the end
    assert 25 <= rec.frames <= written
    assert abs(rec.audio_seconds - rec.frames / 25) <= 1.0


def _record_noise_until_failure(path: str) -> tuple[int, str, int]:
    """Noise frames (incompressible, so the limit comes within seconds) until the recorder gives up."""
    rng = np.random.default_rng(0)
    sink = RecorderSink(path)
    sink.open(StreamInfo(64, 64, 25, extra={"origin": 0.0}))
    message = ""
    for index in range(2500):
        try:
            sink.write_audio(AudioChunk(rng.uniform(-0.1, 0.1, 640).astype(np.float32), index / 25))
            sink.write_video(VideoFrame(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), index / 25, index))
        except RecordingFailed as exc:
            message = str(exc)
            break
    sink.close()  # after a failure: closes without raising again
    return sink.frames_written, message, Path(path).stat().st_size


def decodable(path: Path) -> tuple[int, float]:
    """(video frames, audio seconds) a player gets from a file whose end may be cut off: decoding stops at
    the first broken packet, as a player's would."""
    frames, samples, rate = 0, 0, 1
    for kind in ("video", "audio"):
        with av.open(str(path)) as c:
            stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
            rate = stream.sample_rate if kind == "audio" else rate
            with contextlib.suppress(av.error.FFmpegError):
                for packet in c.demux(stream):
                    for frame in packet.decode():
                        frames += kind == "video"
                        samples += frame.samples if kind == "audio" else 0
    return frames, samples / rate


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_killed_recording_keeps_all_but_its_last_seconds(tmp_path: Path, suffix: str) -> None:
    """SIGKILL (a crash, a power cut) while recording: the file plays up to a second or two before the kill.
    The daemon's own count of frames handed to the recorder says how far it had come."""
    out = tmp_path / f"crash{suffix}"
    proc, url = started_daemon(cli("demo", "--size", "96x96", "--port", "0", "--record", str(out)), tmp_path, env())
    try:
        deadline = time.monotonic() + 120
        while (written := recorder_frames(url)) < 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert written >= 100, "the recorder never got 4 s of frames"
    frames, audio_s = decodable(out)
    print(f"{written} frames handed to the recorder before the kill; {frames} frames, {audio_s:.2f} s of sound play")
    assert frames >= written - 2 * 25
    assert audio_s >= (written - 2 * 25) / 25


def test_full_disk_under_the_cli_is_an_error_not_a_recording(tmp_path: Path) -> None:
    """`avatar-bridge demo --record` whose file may not grow past 30 kB (about two seconds): one line says
    the recording stopped and why, the command fails, never claims "recorded", and the file plays cleanly."""
    out = tmp_path / "full.mp4"
    proc = subprocess.run(cli("demo", "--size", "96x96", "--no-http", "--duration", "5", "--record", str(out)),
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: limit_file_size(30_000))
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr and "avatar-bridge: recorded" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("avatar-bridge: error: ")]
    assert len(errors) == 1 and f"recording to {out} stopped after" in errors[0] and "size limit" in errors[0]
    rec = read_recording(out)
    assert rec.frames >= 25 and out.stat().st_size <= 30_000


def test_a_transparent_avatar_records_alpha_through_the_daemon(tmp_path: Path, speechlike: Path) -> None:
    """outputs.record.path = *.webm with the default avatar settings (a background colour, transparent off): the
    recording asks for alpha, and the rendered coverage reaches the file."""
    import asyncio

    from bridge.core.config import load_config
    from bridge.runtime.daemon import Daemon
    from tests.avatars import as_demo_avatar

    out = tmp_path / "alpha.webm"
    cfg = load_config(None, environ={}, overrides={
        "video": {"width": 96, "height": 96, "fps": 25}, "avatar": {"background": "#ff0000"},
        "audio": {"source": "file", "file": str(speechlike), "realtime": False},
        "outputs": {"record": {"path": str(out)}},
        "http": {"enabled": False}, "osc": {"enabled": False}, "vmc": {"enabled": False}, "midi": {"enabled": False}})
    with as_demo_avatar():
        daemon = Daemon(cfg)
    assert asyncio.run(daemon.serve()) == 0
    planes = decode_alpha(out)
    assert len(planes) == 50
    for alpha in planes:  # the flat head is a disc in the middle: clear corners, solid centre
        assert alpha[:8, :8].max() <= ALPHA_NOISE[".webm"] and alpha[44:52, 44:52].min() >= 255 - ALPHA_NOISE[".webm"]
