"""A real daemon (silent audio, HTTP on a free loopback port) running on the test's event loop. It renders the
flat test avatar (tests.avatars) unless `demo_head=True`: these tests are about controls and outputs, and the
demo head's cost on a slow or busy machine would make them about its speed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.core.config import load_config


@contextlib.asynccontextmanager
async def running_daemon(*, demo_head: bool = False, **overrides: Any) -> AsyncIterator[Any]:
    from bridge.http.app import build_app
    from bridge.runtime.daemon import Daemon
    from tests.avatars import as_demo_avatar

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
    if demo_head:
        daemon = Daemon(cfg, http_app=build_app)
    else:
        with as_demo_avatar():
            daemon = Daemon(cfg, http_app=build_app)
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
