"""What users install is a wheel: build it from the sources, install it (not editable) into a fresh virtual
environment and run the README's demo from another folder, so runtime data missing from the wheel (presets,
the demo speech, the web pages) fails here and not on a user's machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, read_recording

# What a wheel is built from: the project files, nothing a checkout happens to hold besides.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "bridge", "drivers", "presets")
SHIPPED_DATA = (
    "bridge/shipped_presets/arkit_demo.toml",
    "bridge/shipped_presets/emotions.toml",
    "bridge/shipped_presets/midi/nanokontrol2.toml",
    "drivers/audio/data/demo_speech.ogg",
    "bridge/http/static/panel.html",
    "bridge/http/static/viewer.js",
)


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline (no index, this environment's setuptools) from a copy of the sources."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / name)
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src,
        cwd=src)
    (built,) = dist.glob("avatar_bridge-*.whl")
    return built


def test_the_wheel_holds_the_runtime_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED_DATA if n not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert not any(n.startswith(("tests/", "presets/")) for n in names)  # no stray top-level packages


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # The dependencies (torch, av, aiortc, ...) come from this environment's site-packages, listed by a .pth
    # line: a path line only, so this environment's own .pth hooks (the editable checkout's finder) stay out.
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("AVATAR_BRIDGE__")}
    where = run(python, "-c", "import bridge, drivers; print(bridge.__file__); print(drivers.__file__)",
                cwd=elsewhere, env=env)
    assert all(line.startswith(str(venv)) for line in where.split()), where
    out = run(venv / "bin" / "avatar-bridge", "demo", "--duration", "2", "--record", "x.mp4", "--no-http",
              cwd=elsewhere, env=env)
    assert "avatar-bridge: recorded x.mp4" in out
    rec = read_recording(elsewhere / "x.mp4")
    assert rec.frames == 50 and rec.audio.std() > 0.01  # two seconds of the talking demo with its speech
    listing = run(venv / "bin" / "avatar-bridge", "presets", "list", cwd=elsewhere, env=env)
    assert "happy" in listing
