"""Alpha on demand: outputs that carry alpha (a viewer asking for packed alpha, the /obs page, a .webm or .mov
recording, an RGBA virtual camera) hold a claim while they run; the avatar reads `wanted` each frame and
produces alpha (and the avatar alone over black beside the composited picture) only while some output does.
"""

from __future__ import annotations

import threading
from collections import Counter


class AlphaDemand:
    """A thread-safe count of claims by name ("whep", "recorder", ...); `wanted` while any is held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: Counter[str] = Counter()

    def claim(self, who: str) -> None:
        with self._lock:
            self._claims[who] += 1

    def release(self, who: str) -> None:
        """Give back one claim of `who`; releasing one that is not held is a no-op (a double close)."""
        with self._lock:
            if self._claims[who] > 0:
                self._claims[who] -= 1
            if self._claims[who] == 0:
                del self._claims[who]

    @property
    def wanted(self) -> bool:
        return bool(self._claims)  # reading a dict's size is atomic: the render thread takes no lock

    def holders(self) -> dict[str, int]:
        with self._lock:
            return dict(self._claims)
