"""A real daemon (silent audio, demo avatar, HTTP on a free loopback port) running on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from bridge import registry
from bridge.config import load_config
from bridge.face_params import FaceParams
from bridge.interfaces import RenderedImage


class ParamImageAvatar:
    """A tiny real avatar for builds without the demo head: each FaceParams channel group paints its own band,
    so any change of the mixed parameters changes the picture."""

    name = "demo"
    device = "cpu"
    expression_channels: dict[str, int] = {}  # noqa: RUF012

    def __init__(self, width: int = 128, height: int = 128, **_: Any) -> None:
        self.width, self.height = width, height

    def render(self, params: FaceParams) -> RenderedImage:
        vec = params.to_vector()
        img = np.zeros((self.height, self.width, 3), np.uint8)
        bands = np.array_split(np.arange(self.height), len(vec))
        for rows, value in zip(bands, vec):
            img[rows, :, 0] = np.uint8(np.clip(128 + 100 * value, 0, 255))
            img[rows, :, 1] = np.uint8(np.clip(128 - 100 * value, 0, 255))
        return RenderedImage(rgb=img)

    def close(self) -> None:
        pass


if importlib.util.find_spec("drivers.avatar.demo") is None:
    registry.register("avatar", "demo", "tests.panel.conftest:ParamImageAvatar")


@contextlib.asynccontextmanager
async def running_daemon(**overrides: Any) -> AsyncIterator[Any]:
    from bridge.daemon import Daemon

    base: dict[str, Any] = {
        "video": {"width": 128, "height": 128, "fps": 25},
        "audio": {"source": "silence"},
        "http": {"host": "127.0.0.1", "port": 0},
        "osc": {"enabled": False},
        "vmc": {"enabled": False},
        "midi": {"enabled": False},
        "idle": {"blink": False, "gaze": False, "sway": False},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    cfg = load_config(None, overrides=base, environ={})
    daemon = Daemon(cfg)
    ready = asyncio.Event()
    task = asyncio.get_running_loop().create_task(daemon.serve(ready=lambda _d: ready.set()))
    async with asyncio.timeout(60):
        done, _ = await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, return_when="FIRST_COMPLETED")
    if task in done:
        task.result()  # raises the start-up error
    try:
        yield daemon
    finally:
        daemon.request_stop()
        async with asyncio.timeout(15):
            await task


@pytest.fixture
def daemon_factory() -> Any:
    return running_daemon
