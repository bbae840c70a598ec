"""Named presets and emotions from TOML, reloaded when their files change, and capture of the mixed state.

Files in the presets folder: ``expressions.toml`` and ``captured.toml`` (kind "preset") and
``emotions.toml`` (kind "emotion"). An entry is a table of ARKit weights, an optional ``raw`` table of
FaceParams deltas and an optional ``fade`` (seconds). A file with an error keeps its last good content and
the error is reported (``errors``), so a typo while editing never takes presets away from a live show.

Everything is bounded: a presets file is at most `MAX_FILE_BYTES`, a captured preset's name is 1-64 letters,
digits, `_` or `-`, and at most `max_captured` presets are captured. Files are parsed outside the library's
lock, checked for changes on a worker thread (`poll_soon`, never on the render thread or the event loop) and
written atomically (a temporary file, then `os.replace`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import string
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from numpy.typing import NDArray

from bridge.controls.vocabulary import arkit_name
from bridge.core.errors import UserError
from bridge.core.face_params import FaceParams
from bridge.core.user_dirs import user_data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
VEC = FaceParams.VECTOR_SIZE

FILES: dict[str, str] = {"expressions.toml": "preset", "captured.toml": "preset", "emotions.toml": "emotion"}
CAPTURE_FILE = "captured.toml"
MAX_FILE_BYTES = 256 * 1024  # a few thousand presets; larger is a mistake (or an attack) that would stall reloads
MAX_NAME = 64
NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
MAX_CAPTURED = 256


class MapError(UserError, ValueError):
    """A problem in a map or preset file, naming the file, the entry and the fix."""


def group_delta(groups: dict[str, Any], channels: dict[str, int], where: str) -> F32:
    """A 120-vector from ``{group: list | {index|channel: value}}``."""
    out = np.zeros(VEC, np.float32)
    for group, value in groups.items():
        if group not in FaceParams.LAYOUT:
            raise MapError(f"{where}: unknown group {group!r}; use one of {sorted(FaceParams.LAYOUT)}")
        start, n = FaceParams.LAYOUT[group]
        if isinstance(value, list):
            flat = np.asarray(value, dtype=np.float64).reshape(-1)
            if flat.shape[0] > n:
                raise MapError(f"{where}: {group} takes at most {n} values, got {flat.shape[0]}")
            out[start : start + flat.shape[0]] += flat.astype(np.float32)
        elif isinstance(value, dict):
            for key, v in value.items():
                if key.lstrip("-").isdigit():
                    idx = int(key)
                elif group == "expression" and key in channels:
                    idx = channels[key]
                else:
                    raise MapError(f"{where}: {group} key {key!r} is neither an index nor a channel name "
                                   f"(channels: {sorted(channels)})")
                if not 0 <= idx < n:
                    raise MapError(f"{where}: {group} index {idx} outside 0..{n - 1}")
                if not isinstance(v, (int, float)):
                    raise MapError(f"{where}: {group}[{key}] = {v!r} is not a number")
                out[start + idx] += float(v)
        else:
            raise MapError(f"{where}: {group} must be a list or a table, got {type(value).__name__}")
    if not np.all(np.isfinite(out)):
        raise MapError(f"{where}: values must be finite")
    return out


class PresetError(ValueError):
    """A preset name, count or file the library refuses to save; the text says what to do instead."""


def read_toml(path: Path, max_bytes: int = MAX_FILE_BYTES) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise MapError(f"{path} does not exist") from None
    except OSError as exc:
        raise MapError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise MapError(f"{path} is larger than {max_bytes // 1024} KiB: too large for a presets file; remove "
                       "entries or split it")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MapError(f"{path} is not valid TOML: {exc}; fix the syntax there") from None


def check_name(name: str) -> None:
    """A preset name is 1-64 ASCII letters, digits, '_' or '-' (it becomes a TOML key and an OSC address)."""
    if not name or len(name) > MAX_NAME or not NAME_CHARS.issuperset(name):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise PresetError(f"preset name {shown!r} ({len(name)} characters) is not allowed: use 1 to {MAX_NAME} "
                          "letters, digits, '_' or '-'")


@functools.cache  # where the package lies does not change while it runs; asked on every reload check
def presets_dir() -> Path:
    """The presets shipped with Avatar Bridge (ARKit maps, expressions, emotions, MIDI maps): the one place
    every part looks them up. An installed wheel holds them in bridge/shipped_presets (setup.py maps the
    checkout's top-level presets/ folder there)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "shipped_presets"
    return installed if installed.is_dir() else package.parent / "presets"


def user_presets_dir() -> Path:
    """Where this user's presets live when `presets.dir` is not set: captured presets, MIDI maps learned,
    calibrations, and any preset or map file of the shipped kinds, read before (and in addition to) the shipped
    ones: `presets` in the per-user folder (`bridge.core.user_dirs.user_data_dir`, e.g.
    ~/.local/share/avatar-bridge/presets)."""
    return user_data_dir() / "presets"


@dataclass
class Preset:
    name: str
    kind: str  # "preset" | "emotion"
    arkit: dict[str, float] = field(default_factory=dict)
    raw: F32 = field(default_factory=lambda: np.zeros(FaceParams.VECTOR_SIZE, np.float32))
    fade: float | None = None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "arkit": self.arkit, "fade": self.fade, "source": self.source,
                "raw": {k: self.raw[s : s + n].tolist() for k, (s, n) in FaceParams.LAYOUT.items()
                        if np.any(self.raw[s : s + n])}}


def parse_presets(data: dict[str, Any], kind: str, where: str) -> dict[str, Preset]:
    out: dict[str, Preset] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise MapError(f"{where}: [{name}] must be a table of ARKit weights")
        preset = Preset(name=name, kind=kind, source=where)
        for key, value in entry.items():
            if key == "raw":
                if not isinstance(value, dict):
                    raise MapError(f"{where}: [{name}.raw] must be a table of FaceParams groups")
                preset.raw = group_delta(value, {}, f"{where} [{name}.raw]")
            elif key == "fade":
                if not isinstance(value, (int, float)) or not 0 <= value <= 60:
                    raise MapError(f"{where}: [{name}] fade must be seconds in 0..60")
                preset.fade = float(value)
            else:
                canonical = arkit_name(key)
                if canonical is None:
                    raise MapError(f"{where}: [{name}] {key!r} is not an ARKit blendshape name "
                                   "(see docs/controls.md for the 52 names)")
                if not isinstance(value, (int, float)) or not -2.0 <= float(value) <= 2.0:
                    raise MapError(f"{where}: [{name}] {key} = {value!r} must be a number in -2..2")
                preset.arkit[canonical] = float(value)
        out[name] = preset
    return out


class PresetLibrary:
    """Presets and emotions of a folder (`presets.dir`, else the user's) read before and in addition to the
    shipped ones (a name in both is the folder's), hot-reloaded by `poll()`; captures are written there."""

    def __init__(self, directory: Path | None = None, max_captured: int = MAX_CAPTURED) -> None:
        self.directory = Path(directory) if directory else user_presets_dir()
        self.max_captured = int(max_captured)
        self._lock = threading.Lock()  # guards the tables below, never held while a file is read
        self._capture_lock = threading.Lock()  # one capture's read-modify-write at a time
        self._polling = False
        self._mtimes: dict[Path, float] = {}
        self._by_file: dict[Path, dict[str, Preset]] = {}
        self.errors: dict[str, str] = {}
        self.generation = 0
        self.reload()

    def _paths(self) -> list[tuple[Path, str]]:
        out = []
        for fname, kind in FILES.items():
            own = self.directory / fname
            shipped = presets_dir() / fname
            if own.is_file():
                out.append((own, kind))
            if shipped.is_file() and shipped != own and fname != CAPTURE_FILE:
                out.append((shipped, kind))
        return out

    @staticmethod
    def _read(path: Path, kind: str) -> dict[str, Preset] | MapError:
        try:
            return parse_presets(read_toml(path), kind, str(path))
        except MapError as exc:
            return exc

    def _store(self, path: Path, result: dict[str, Preset] | MapError) -> None:
        """Under the lock: a file's presets, or its error (keeping the last good version)."""
        if isinstance(result, MapError):
            self.errors[str(path)] = str(result)
            log.warning("presets: %s (keeping the last good version)", result)
            return
        self.errors.pop(str(path), None)
        self._by_file[path] = result

    def reload(self) -> None:
        """Re-read every file now (blocking: call it off the event loop)."""
        read = [(path, _mtime(path), self._read(path, kind)) for path, kind in self._paths()]
        with self._lock:
            self._by_file.clear()
            self._mtimes.clear()
            for path, mtime, result in read:
                self._mtimes[path] = mtime
                self._store(path, result)
            self.generation += 1

    def poll(self) -> bool:
        """Reload the files whose modification time changed (or that appeared); True when something did."""
        with self._lock:
            known = dict(self._mtimes)
        changed = [(path, kind, m) for path, kind in self._paths() if known.get(path) != (m := _mtime(path))]
        read = [(path, m, self._read(path, kind)) for path, kind, m in changed]
        if read:
            with self._lock:
                for path, mtime, result in read:
                    self._mtimes[path] = mtime
                    self._store(path, result)
                self.generation += 1
        return bool(read)

    def poll_soon(self) -> None:
        """`poll()` on a worker thread, one at a time: the render thread only starts it and then sees the new
        `generation` on a later frame."""
        with self._lock:
            if self._polling:
                return
            self._polling = True

        def work() -> None:
            try:
                self.poll()
            except Exception:  # a file error is reported by poll; anything else must not kill reloading
                log.exception("presets: checking the files failed")
            finally:
                with self._lock:
                    self._polling = False

        threading.Thread(target=work, name="presets-poll", daemon=True).start()

    def get(self, kind: str, name: str) -> Preset | None:
        with self._lock:
            for presets in self._by_file.values():
                p = presets.get(name)
                if p is not None and p.kind == kind:
                    return p
        return None

    def names(self, kind: str) -> list[str]:
        with self._lock:
            return sorted({n for ps in self._by_file.values() for n, p in ps.items() if p.kind == kind})

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            items = [p.to_json() for ps in self._by_file.values() for p in ps.values()]
            errors = dict(self.errors)
        return {"directory": str(self.directory), "presets": items, "errors": errors}

    def capture(self, name: str, delta: F32, fade: float | None = None) -> Path:
        """Save `delta` (the manual/preset/emotion part of the mixed state) as preset `name` (blocking: file
        work, call it off the event loop); raises `PresetError` with what to do, or OSError."""
        check_name(name)
        path = self.directory / CAPTURE_FILE
        raw: dict[str, list[float]] = {}
        for group, (s, n) in FaceParams.LAYOUT.items():
            part = np.round(delta[s : s + n].astype(np.float64), 5)
            if np.any(part):
                raw[group] = [float(v) for v in part]
        entry: dict[str, Any] = {"raw": raw}
        if fade is not None:
            entry["fade"] = fade
        with self._capture_lock:
            try:
                data: dict[str, Any] = read_toml(path) if path.is_file() else {}
            except MapError as exc:
                raise PresetError(f"cannot add to {CAPTURE_FILE}: {exc}") from None
            if name not in data and len(data) >= self.max_captured:
                raise PresetError(f"{len(data)} presets are captured already (presets.max_captured = "
                                  f"{self.max_captured}); delete some from {path} or save over an existing name")
            data[name] = entry
            text = tomli_w.dumps(data).encode()
            if len(text) > MAX_FILE_BYTES:
                raise PresetError(f"{CAPTURE_FILE} would grow beyond {MAX_FILE_BYTES // 1024} KiB; delete "
                                  f"presets from {path}")
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, text)
        self.poll()
        return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one (a temporary file, then os.replace)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return -1.0
