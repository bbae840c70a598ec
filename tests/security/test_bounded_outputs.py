"""Outputs that hang, or that another program takes away, never hold the daemon: a recording path that is a
FIFO or a device is refused before anything runs; a PulseAudio server that stops answering (SIGSTOP) is named
by /health as the voice output and cannot keep SIGTERM from ending the daemon within about two seconds; a
second daemon leaves the first one's virtual microphone alone; a virtual camera whose driver hangs in a send
is named by its last completed send; a Janus that stops answering is named by /health (by the keepalive's
deadline) and does not hold the stop either. Every daemon here is a real process; the servers are real too."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bridge.core.interfaces import StreamInfo, VideoFrame
from bridge.core.stats import PipelineStats
from bridge.runtime.sinks import SinkRunner
from bridge.runtime.watchdog import Watchdog
from drivers.output.recorder import RecorderSink
from drivers.output.virtual_mic import SINK, SOURCE, VirtualMic
from drivers.output.virtualcam import VirtualCameraSink
from tests.conftest import needs_program, require_program
from tests.output.janus_server import janus_available, running_janus
from tests.output.pulse_server import PulseServer, pulseaudio_available, running_pulseaudio
from tests.output.test_virtualcam import I420Only
from tests.security.daemon import DaemonProcess, wait_for

STOP_BOUND_S = 2.0  # SIGTERM to exit, what the daemon promises
LOADED_SLACK_S = 1.5  # a busy two-core machine may add this much to the process's own exit


def health(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    answer = daemon.request("GET", "/health", timeout=10)  # a frozen loop shows as a timeout here
    return answer.status, answer.json


def named(daemon: DaemonProcess, stage: str) -> dict[str, Any] | None:
    """The stage's entry when /health answers 503 naming it, else None."""
    status, body = health(daemon)
    bad = {entry["stage"]: entry for entry in body.get("stalled", [])}
    return bad.get(stage) if status == 503 else None


# ---- recordings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_record_path_that_is_not_a_regular_file_is_refused_up_front(tmp_path: Path, kind: str) -> None:
    path = {"fifo": tmp_path / "out.mp4", "device": Path("/dev/null"), "folder": tmp_path / "dir.mp4"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    daemon = DaemonProcess(tmp_path / "daemon", {"outputs": {"record": {"path": str(path)}}})
    with pytest.raises(RuntimeError, match="exited with 2"):
        daemon.start(timeout=120)
    errors = [line for line in daemon.log().splitlines() if "error" in line]
    assert errors == [errors[0]] and f"cannot record to {path}: it is a" in errors[0], daemon.log()[-2000:]
    assert "Traceback" not in daemon.log()


def test_a_path_that_became_a_fifo_is_refused_when_opened_not_waited_on(tmp_path: Path) -> None:
    """The path was a free name when the recorder was made and is a FIFO without a reader when it opens (what
    would block an ordinary open for ever): the sink fails at once, the watchdog names it, the stop is quick."""
    path = tmp_path / "late.mp4"
    sink = RecorderSink(path)
    os.mkfifo(path)
    watchdog = Watchdog()
    watchdog.start(())
    runner = SinkRunner(sink, StreamInfo(64, 64, 25), PipelineStats(), watchdog=watchdog)
    runner.start()
    runner.put_video(VideoFrame(np.zeros((64, 64, 3), np.uint8), 0.0, 0))
    report = wait_for(lambda: watchdog.report()["stalled"], 20, "the recorder named by the watchdog")
    assert report[0]["stage"] == "sink:recorder" and report[0]["state"] == "failed", report
    assert "it is a FIFO" in report[0]["error"], report
    started = time.monotonic()
    runner.close(timeout=5.0)
    assert time.monotonic() - started < 1.0


# ---- a virtual camera whose driver hangs in a send ------------------------------------------------------------


class HangingCamera(I420Only):
    """A pyvirtualcam backend (registered through its plug-in API) whose send blocks, once `hang` is set, until
    `release` is: what a wedged v4l2loopback writer or a stuck OBS virtual camera does to the sending thread."""

    takes = "I420"
    frames: ClassVar[list[np.ndarray]] = []
    hang = threading.Event()
    release = threading.Event()

    def send(self, frame: np.ndarray) -> None:
        if self.hang.is_set():
            self.release.wait(60)
        else:
            super().send(frame)


def test_a_virtual_camera_hung_in_a_send_is_named_and_cannot_hold_the_stop() -> None:
    """The sink's writes only hand the frame to its sending thread, so they go on returning while the send
    hangs: the watchdog (what /health reports) names the camera by its last completed send."""
    import pyvirtualcam
    from pyvirtualcam import camera

    pyvirtualcam.register_backend("hanging", HangingCamera)
    HangingCamera.hang.clear()
    HangingCamera.release.clear()
    HangingCamera.frames = []
    watchdog = Watchdog()
    watchdog.start(())
    sink = VirtualCameraSink(backend="hanging", fmt="i420")
    runner = SinkRunner(sink, StreamInfo(64, 64, 25), PipelineStats(), watchdog=watchdog)
    feeding = threading.Event()
    handed = [0]

    def feed() -> None:
        while not feeding.is_set():
            runner.put_video(VideoFrame(np.zeros((64, 64, 3), np.uint8), handed[0] / 25, handed[0]))
            handed[0] += 1
            time.sleep(0.04)

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        runner.start()
        feeder.start()
        wait_for(lambda: sink.sent >= 5, 20, "frames sent to the camera")
        assert watchdog.report()["stages"]["sink:virtualcam"]["state"] == "ok", watchdog.report()
        HangingCamera.hang.set()
        report = wait_for(lambda: watchdog.report()["stalled"], 20, "the watchdog naming the hung camera")
        assert [entry["stage"] for entry in report] == ["sink:virtualcam"], report
        assert report[0]["state"] == "stalled", report
        sent, given = sink.sent, handed[0]
        wait_for(lambda: handed[0] > given + 5, 20, "frames still handed to the sink")
        assert runner.failed is None and sink.sent == sent  # the handovers went on; no send completed
        assert len(HangingCamera.frames) == sent  # what the driver took, frame by frame
        started = time.monotonic()
        runner.close(timeout=5.0)
        took = time.monotonic() - started
        assert took < 1.0 + LOADED_SLACK_S, f"the stop took {took:.2f} s"  # the sink waits 1 s for its sender
    finally:
        feeding.set()
        HangingCamera.release.set()
        camera.BACKENDS.pop("hanging", None)


# ---- the voice output on a PulseAudio server ------------------------------------------------------------------


@pytest.fixture
def pulse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    require_program("pulseaudio", "pulseaudio pulseaudio-utils", found=pulseaudio_available())
    with running_pulseaudio(tmp_path / "pulse") as server:
        for key in ("PULSE_SERVER", "HOME", "XDG_RUNTIME_DIR"):  # the daemons started here inherit these
            monkeypatch.setenv(key, server.env[key])
        yield server


def mic_modules(server: PulseServer) -> list[str]:
    return [line for line in server.pactl("list", "short", "modules").splitlines() if SINK in line or SOURCE in line]


def voice_daemon(tmp: Path, name: str) -> DaemonProcess:
    return DaemonProcess(tmp / name, {"outputs": {"passthrough": {"create": True, "delay_ms": 200}}}).start(120)


def test_a_second_daemon_leaves_the_first_daemons_microphone_alone(pulse: PulseServer, tmp_path: Path) -> None:
    first = voice_daemon(tmp_path, "first")
    try:
        wait_for(lambda: health(first)[1]["stages"].get("voice", {}).get("state") == "ok", 30, "the voice playing")
        owned = mic_modules(pulse)
        assert len(owned) == 2 and all(f"avatar_bridge.owner={first.pid}." in m for m in owned), owned
        second = voice_daemon(tmp_path, "second")
        try:
            assert "belongs to another running daemon" in second.log(), second.log()[-2000:]
            assert "left over" not in second.log()
        finally:
            calm = second.stop(30)
        assert mic_modules(pulse) == owned, "the second daemon touched the first one's microphone"
        assert health(first)[0] == 200
        assert calm <= STOP_BOUND_S + LOADED_SLACK_S, f"a calm stop took {calm:.2f} s"
    finally:
        first.stop()
    assert mic_modules(pulse) == [], "the first daemon left its microphone behind"


def test_a_hung_sound_server_is_named_and_cannot_hold_the_stop(pulse: PulseServer, tmp_path: Path) -> None:
    daemon = voice_daemon(tmp_path, "hung")
    try:
        wait_for(lambda: health(daemon)[1]["stages"].get("voice", {}).get("state") == "ok", 30, "the voice playing")
        frames = daemon.frames()
        os.kill(pulse.pid, signal.SIGSTOP)
        try:
            voice = wait_for(lambda: named(daemon, "voice"), 30, "/health naming the voice output")
            assert voice["state"] == "stalled", voice
            daemon.assert_rendering(frames)  # the picture goes on
            took = daemon.stop(30)
        finally:
            os.kill(pulse.pid, signal.SIGCONT)
        assert took <= STOP_BOUND_S + LOADED_SLACK_S, f"the stop took {took:.2f} s:\n{daemon.log()[-2000:]}"
        assert "could not remove the virtual microphone" in daemon.log(), daemon.log()[-2000:]
    finally:
        daemon.stop()
    # What the hung server kept is cleaned up by the next start: its owner has ended.
    left = mic_modules(pulse)
    assert len(left) == 2, left
    mic = VirtualMic()
    mic.create()
    mic.remove()
    assert mic_modules(pulse) == []


def test_a_stop_while_the_daemon_waits_on_a_hung_server_at_start_is_obeyed(pulse: PulseServer,
                                                                           tmp_path: Path) -> None:
    """SIGTERM while the daemon makes its microphone on a server that never answers (pactl waits up to 10 s)."""
    with socket.socket() as probe:  # a free port, so /health can be asked before the daemon says it runs
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = DaemonProcess(tmp_path / "starting", {"http": {"port": port},
                                                   "outputs": {"passthrough": {"create": True}}})
    daemon.port = port
    os.kill(pulse.pid, signal.SIGSTOP)
    try:
        daemon.launch()

        def serving() -> bool:
            assert daemon.alive(), daemon.log()[-2000:]
            try:
                return daemon.request("GET", "/health", timeout=5).status in (200, 503)
            except OSError:
                return False

        wait_for(serving, 120, "the daemon serving HTTP")  # the microphone comes after HTTP and the pipeline
        time.sleep(1.0)
        assert "running:" not in daemon.log(), "the microphone did not wait on the stopped server"
        took = daemon.stop(30)
    finally:
        os.kill(pulse.pid, signal.SIGCONT)
        daemon.stop()
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.log()[-2000:]
    assert took <= STOP_BOUND_S + LOADED_SLACK_S, f"the stop took {took:.2f} s:\n{daemon.log()[-2000:]}"


# ---- a publisher to a Janus that stops answering --------------------------------------------------------------


def janus_named(daemon: DaemonProcess) -> dict[str, Any] | None:
    """The Janus publisher's entry in /api/status (with its reason) while /health answers 503 naming it."""
    if named(daemon, "publisher:janus") is None:
        return None
    entry: dict[str, Any] = daemon.status()["health"]["stages"]["publisher:janus"]
    return entry if entry["state"] in ("stalled", "failed") else None


@needs_program("janus", "janus", found=janus_available())
async def test_a_janus_that_stops_answering_is_named_and_cannot_hold_the_stop(tmp_path: Path) -> None:
    """Frozen Janus (SIGSTOP): the keepalive's deadline names it, well before ICE consent (about 30 s) would
    end the media; then, frozen again while a Janus session is open, the stop does not wait on its answer."""
    async with running_janus(tmp_path) as janus:
        daemon = DaemonProcess(tmp_path / "daemon", {"webrtc": {"janus": {"url": janus.url, "room": janus.room}}})
        await asyncio.to_thread(daemon.start, 120)
        try:
            def publishing() -> bool:
                return bool(daemon.viewers()["janus"]["state"] == "publishing")

            await asyncio.to_thread(wait_for, publishing, 60, "publishing to Janus")
            assert (await asyncio.to_thread(health, daemon))[0] == 200
            frames = await asyncio.to_thread(daemon.frames)
            os.kill(janus.proc.pid, signal.SIGSTOP)
            try:
                why = await asyncio.to_thread(wait_for, lambda: janus_named(daemon), 60,
                                              "/health naming the Janus publisher")
                # The reason (in /api/status, behind the token) is the keepalive's deadline, nothing later.
                assert "did not answer 'keepalive'" in why.get("error", ""), why
                await asyncio.to_thread(daemon.assert_rendering, frames)
            finally:
                os.kill(janus.proc.pid, signal.SIGCONT)
            await asyncio.to_thread(wait_for, publishing, 90, "publishing to Janus again")
            os.kill(janus.proc.pid, signal.SIGSTOP)  # a session is open: ending it asks Janus, which never answers
            try:
                took = await asyncio.to_thread(daemon.stop, 30)
            finally:
                os.kill(janus.proc.pid, signal.SIGCONT)
            assert took <= STOP_BOUND_S + LOADED_SLACK_S, f"the stop took {took:.2f} s:\n{daemon.log()[-2000:]}"
        finally:
            await asyncio.to_thread(daemon.stop)
