"""Models loaded once per process and shared by every session that uses them.

A daemon hosting many avatars would otherwise hold one copy of each network per avatar (HuBERT and the
DiffPoseTalk denoiser, FLAME, each FlashAvatar checkpoint). `ModelCache.get` returns the one object built for a
key made of what the object was built from: each file's resolved path with its size and modification time (an
edited file is a new model), the device, and any settings that change the object. Loading is the caller's
`load()`, run on the caller's thread: callers on the event loop hand the whole `get` to a worker thread, as
every model load is.

Two threads asking for one key get one load: the second waits for the first. Different keys load at once.
The cache holds at most `capacity` objects; beyond it the least recently used one is forgotten (its users keep
their reference, and a later `get` loads it again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

DEFAULT_CAPACITY = 64

FileStamp = tuple[str, int, int]
"""(resolved path, size in bytes, modification time in ns) of one file a model was built from."""


@dataclass(frozen=True)
class ModelKey:
    kind: str
    files: tuple[FileStamp, ...]
    device: str
    settings: Hashable = ()


def stamp(path: Path | str) -> FileStamp:
    """The file's identity for the cache. A missing file gets size -1, so its `load()` runs and reports it in
    the loader's words (which name the setting to fix); a failed load is never kept."""
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        return str(p), -1, -1
    return str(p), st.st_size, st.st_mtime_ns


class _Entry:
    def __init__(self) -> None:
        self.ready = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class ModelCache:
    """One object per `ModelKey` for the whole process (see the module docstring). Thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a model cache holds at least one model")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[ModelKey, _Entry] = OrderedDict()
        self.loads = 0
        """How many times a `load()` ran: tests and benchmarks read it to see that sharing happened."""

    def key(self, kind: str, files: Sequence[Path | str | None], device: str, settings: Hashable = ()) -> ModelKey:
        """The key of a model of `kind` built from `files` (None entries are skipped) for `device`."""
        return ModelKey(kind, tuple(stamp(f) for f in files if f is not None), str(device), settings)

    def get(self, key: ModelKey, load: Callable[[], T]) -> T:
        """The object for `key`, made by `load()` on the first call (on this thread); later calls return it.
        A failed load is not kept: its error goes to the callers waiting for it, and the next call tries again."""
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if entry is None:
                entry = self._entries[key] = _Entry()
                self._evict()
            else:
                self._entries.move_to_end(key)
        if owner:
            try:
                entry.value = load()
                with self._lock:
                    self.loads += 1
            except BaseException as exc:
                entry.error = exc
                with self._lock:
                    if self._entries.get(key) is entry:
                        del self._entries[key]
                raise
            finally:
                entry.ready.set()
            return cast(T, entry.value)
        entry.ready.wait()
        if entry.error is not None:
            raise entry.error
        return cast(T, entry.value)

    def count(self) -> int:
        """Models held now (not __len__: an empty cache must not be falsy where `models or default` is written)."""
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _evict(self) -> None:
        while len(self._entries) > self.capacity:
            old_key, old = next(iter(self._entries.items()))
            if not old.ready.is_set():  # a load in progress stays; the cache is over capacity until it ends
                break
            del self._entries[old_key]


_process_models = ModelCache()


def process_models() -> ModelCache:
    """The process-wide cache: what every driver uses unless it is handed another one."""
    return _process_models
