"""The per-user folder the daemon keeps what a user makes in (presets, recordings): outside the installation,
which may be read-only and is replaced on upgrade."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    """$XDG_DATA_HOME/avatar-bridge when XDG_DATA_HOME is set, else ~/.local/share/avatar-bridge,
    %APPDATA%\\avatar-bridge on Windows, ~/Library/Application Support/avatar-bridge on macOS."""
    if os.environ.get("XDG_DATA_HOME"):  # set on purpose, on any system
        base = Path(os.environ["XDG_DATA_HOME"])
    elif sys.platform == "win32" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path.home() / ".local" / "share"
    return base / "avatar-bridge"
