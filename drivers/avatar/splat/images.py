"""Rendered float images to the uint8 pictures outputs take."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[0,1] floats (clamped) → uint8, rounded half up, on the host. A CUDA tensor is converted on the device and
    copied once; a CPU tensor through NumPy (single-threaded, as fast here as torch's thread pool and without
    waking it)."""
    if image.device.type == "cpu":
        return np.clip(image.detach().numpy() * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return np.asarray((image.detach().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy())
