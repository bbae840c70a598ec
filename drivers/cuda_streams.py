"""CUDA streams for the avatar's real-time work.

On a GPU shared with other programs (a game, OBS's encoder, other sessions' batches), kernels of a
high-priority stream are scheduled ahead of waiting kernels of normal streams as soon as an SM frees up: the
frame's render and the face driver's hops keep their deadlines where the GPU allows. Priority does not preempt
a kernel already running, so it helps most against a load of many short kernels.
"""

from __future__ import annotations

import torch

HIGHEST = -1000  # torch maps a priority beyond the device's range to its nearest end: the highest one


def realtime_stream(device: torch.device | str, priority: bool = True) -> torch.cuda.Stream:
    """A new stream on `device`, of the highest priority the device has (or the normal one without `priority`)."""
    return torch.cuda.Stream(torch.device(device), priority=HIGHEST if priority else 0)
