"""Sessions placed across worker processes: two real daemons (the flat test avatar) behind the supervisor's
front, sessions created through it land on the emptier worker and render there, a worker killed ends its
sessions with the reason, and new sessions go to the survivor until it is full."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w
from aiohttp import web

from bridge.core.config import HttpConfig
from bridge.http.front import build_front
from bridge.runtime.workers import Supervisor
from tests.output.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any, Any]:
    async with http.request(method, url, json=body) as r:
        return r.status, await r.json(), r.headers


async def test_sessions_are_placed_by_load_and_a_dead_worker_ends_its_own(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    config = tmp_path / "worker.toml"
    config.write_text(tomli_w.dumps({"video": {"width": 64, "height": 64, "fps": 25}, "audio": {"source": "silence"},
                                     "idle": {"blink": False, "gaze": False, "sway": False},
                                     "sessions": {"max": 3, "max_recordings": 0}}))
    supervisor = Supervisor([None, None], config=config, command=[sys.executable, "-m", "tests.avatars", "0"])
    runner = web.AppRunner(build_front(supervisor, HttpConfig(port=0)))
    try:
        await supervisor.start()
        assert all(w.alive for w in supervisor.workers), supervisor.describe()
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        front = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as worker_http:
            # Two sessions: one on each worker (each holds its default session and has room for two more).
            first = (await call(http, "POST", front + "/api/sessions", {}))[1]
            second = (await call(http, "POST", front + "/api/sessions", {"idle": True}))[1]
            assert {first["worker"], second["worker"]} == {0, 1}, (first, second)
            for placed in (first, second):
                assert placed["whep"].endswith(f"/sessions/{placed['id']}/whep")
                status, body, _ = await call(worker_http, "GET", placed["api"] + "/status")
                assert status == 200 and body["session"] == placed["id"]
            status, listing, _ = await call(http, "GET", front + "/api/sessions")
            assert status == 200 and [w["sessions"] for w in listing["workers"]] in (
                [[first["id"]], [second["id"]]], [[second["id"]], [first["id"]]])

            # No worker may record (sessions.max_recordings = 0): the front says so, as the workers do.
            status, body, _ = await call(http, "POST", front + "/api/sessions", {"record": True})
            assert status == 409 and "sessions.max_recordings = 0" in body["error"] and body["fix"], body

            # The front checks the spec before any worker sees it, and follows the request policy.
            status, body, _ = await call(http, "POST", front + "/api/sessions", {"width": 1})
            assert status == 400 and "width" in body["error"]
            async with http.post(front + "/api/sessions", data=b"{}", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 403

            # Worker 0 dies: its session ends with the reason; the next sessions go to worker 1 until it is full.
            dead = supervisor.workers[0]
            lost = first if first["worker"] == 0 else second
            kept = second if lost is first else first
            status, body, _ = await call(http, "GET", front + "/health")
            assert status == 200 and body["alive"] == 2
            os.kill(dead.process.pid, signal.SIGKILL)
            await wait_until(lambda: dead.exit_code is not None, 20, "the supervisor saw the worker exit")
            status, body, _ = await call(http, "GET", front + "/health")
            assert status == 503 and body == {"ok": False, "workers": 2, "alive": 1}
            status, body, _ = await call(http, "GET", front + f"/api/sessions/{lost['id']}")
            assert status == 410 and "worker 0" in body["error"] and "exited" in body["error"], body
            status, body, _ = await call(http, "GET", front + f"/api/sessions/{kept['id']}")
            assert status == 200 and body["worker"] == 1
            third = (await call(http, "POST", front + "/api/sessions", {}))[1]
            assert third["worker"] == 1, third
            status, body, headers = await call(http, "POST", front + "/api/sessions", {})
            assert status == 503 and int(headers["Retry-After"]) == 30, body

            # Ending a session through the front ends it on its worker, and makes room there.
            status, body, _ = await call(http, "DELETE", front + f"/api/sessions/{kept['id']}")
            assert status == 200
            status, _, _ = await call(worker_http, "GET", kept["api"])
            assert status == 404
            fourth = (await call(http, "POST", front + "/api/sessions", {}))[1]
            assert fourth["worker"] == 1, fourth
    finally:
        await runner.cleanup()
        await supervisor.stop()
    assert all(w.exit_code is not None for w in supervisor.workers)


def test_per_gpu_starts_several_workers_on_each_card_and_bounds_them() -> None:
    from bridge.cli import build_parser
    from bridge.commands.workers import MAX_PER_GPU, devices_of
    from bridge.core.errors import UserError

    parse = build_parser().parse_args
    assert devices_of(parse(["workers", "--gpus", "0,1", "--per-gpu", "2"])) == ["0", "0", "1", "1"]
    assert devices_of(parse(["workers", "--gpus", "3"])) == ["3"]
    for bad in ("0", str(MAX_PER_GPU + 1)):
        with pytest.raises(UserError, match="--per-gpu"):
            devices_of(parse(["workers", "--gpus", "0", "--per-gpu", bad]))
