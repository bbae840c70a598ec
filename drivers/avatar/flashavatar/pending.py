"""`PendingFrame`: a FlashAvatar frame whose device work is queued, waited for when its image is wanted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bridge.core.interfaces import RenderedImage


@dataclass
class PendingFrame:
    """A frame whose GPU work and device→host copy have been queued; `done` fires when `rgb` is filled."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    done: Any  # torch.cuda.Event on CUDA, None on the CPU (already complete)
    count: torch.Tensor | None = None  # frame graph: the true tile-intersection count (pinned host)
    redo: Callable[[int], PendingFrame | None] | None = None  # frame graph: re-render if the count did not fit

    def image(self) -> RenderedImage:
        if self.done is not None:
            self.done.synchronize()
        if self.count is not None and self.redo is not None:
            again = self.redo(int(self.count))
            if again is not None:
                return again.image()
        return RenderedImage(self.rgb.numpy(), None if self.alpha is None else self.alpha.numpy())
