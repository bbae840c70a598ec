"""Switching backgrounds by name at run time (HTTP API, OSC): the configured table is the vocabulary, so a
request names an entry and never hands the daemon a path. Loading a file happens off the caller's thread for
`request` (OSC, on the event loop) and on the caller's for `select` (the HTTP route runs it in an executor)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bridge.core.errors import UserError
from drivers.avatar.scene.avatar import SceneAvatar
from drivers.avatar.scene.background import open_background

log = logging.getLogger(__name__)

Background = tuple[float, float, float] | Path
BUILT_IN: dict[str, Background | None] = {"black": (0.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "studio": None}


class BackgroundTable:
    """Implements `BackgroundControl` for a `SceneAvatar`."""

    def __init__(self, scene: SceneAvatar, default: Background | None, table: dict[str, Background]) -> None:
        """`default` None: the studio backdrop (no background configured)."""
        self.scene = scene
        self.table: dict[str, Background | None] = {**BUILT_IN, **table, "default": default}
        self._current = "default"
        self._lock = threading.Lock()  # one switch at a time: the last one asked for wins
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
        self.errors = 0

    def names(self) -> list[str]:
        return sorted(self.table)

    @property
    def current(self) -> str:
        return self._current

    def select(self, name: str) -> None:
        if name not in self.table:
            raise UserError(f"no background named {name[:40]!r}; choose one of {', '.join(self.names())} "
                            "(add more under [avatar.backgrounds])")
        with self._lock:
            source = open_background(self.table[name], self.scene.width, self.scene.height)
            self.scene.set_background(source).close()
            self._current = name

    def request(self, name: str) -> bool:
        if name not in self.table:
            return False
        self._worker.submit(self._select_logged, name)
        return True

    def _select_logged(self, name: str) -> None:
        try:
            self.select(name)
        except UserError as exc:
            self.errors += 1
            log.warning("background %s: %s", name, exc)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
