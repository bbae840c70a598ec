"""The CLI as a user runs it: a real process, real files, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_recording


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge.cli", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.mark.slow
def test_demo_records_a_playable_talking_head(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    t0 = time.monotonic()
    proc = subprocess.run(
        cli("demo", "--duration", "4", "--record", str(out), "--port", "0"),
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 60
    assert "stage" in proc.stderr and "render" in proc.stderr  # the timing report
    rec = read_recording(out)
    assert rec.codecs == ("h264", "aac")
    assert abs(rec.frames - 100) <= 2
    assert rec.audio_seconds == pytest.approx(rec.synced_audio_seconds(25), abs=1e-6)


def test_sigint_stops_the_daemon_within_two_seconds(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        cli("demo", "--port", "0", "--size", "64x64"), cwd=tmp_path, env=env(),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            if "running:" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        assert time.monotonic() - t0 < 2.0
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_user_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[video]\nfps = 24\n")
    proc = subprocess.run(cli("run", "--config", str(bad)), env=env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "video.fps = 24" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        cli("demo", "--audio", str(tmp_path / "missing.wav"), "--no-http"),
        env=env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
