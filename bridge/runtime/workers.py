"""Sessions across GPUs: one worker process per GPU, each a daemon host (`avatar-bridge run`) pinned to its
card with CUDA_VISIBLE_DEVICES and serving HTTP on a port of its own (the config's `[http]` otherwise, token
included), and a supervisor that starts the workers, reads their load over their HTTP
API, and places each new session on the least loaded one.

The supervisor forwards `POST /api/sessions` to a worker and answers where the session lives (the worker's
API and WHEP URLs); viewers and controls then talk to that worker directly (or, across hosts, to Janus, where
every worker publishes its sessions when `webrtc.janus.url` is set). A worker that exits ends its sessions:
they are reported as ended with the reason, and new sessions go to the workers still running. Workers serve
HTTP only (OSC, VMC and MIDI are one machine's surfaces: the single-host daemon has them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.core.errors import UserError
from bridge.runtime.recordings import RecordingRefused
from bridge.runtime.sessions import SessionsFull

log = logging.getLogger(__name__)

READY = re.compile(r"running: .* http://([^/\s]+):(\d+)/")
WILDCARD = frozenset({"0.0.0.0", "::", "[::]", ""})
START_TIMEOUT_S = 120.0  # a worker loads its default session's models before it says it runs
REQUEST_TIMEOUT_S = 30.0  # a session's creation loads its models on the worker
MAX_LOG_LINES = 200  # a worker's last lines kept for the reason it died


@dataclass(frozen=True)
class WorkerLoad:
    """What a worker reported: its sessions, the capacity it measured or was given, its late frames."""

    sessions: int
    capacity: int | None
    late_frames: int

    @property
    def share(self) -> float:
        """How full it is (sessions per place); a worker still measuring counts as full."""
        return self.sessions / self.capacity if self.capacity else float("inf")


@dataclass
class Worker:
    index: int
    device: str | None  # the CUDA_VISIBLE_DEVICES it runs with (None: whatever the machine has)
    process: asyncio.subprocess.Process
    url: str = ""
    load: WorkerLoad | None = None
    sessions: set[str] = field(default_factory=set)
    exit_code: int | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.exit_code is None and bool(self.url)

    def describe(self) -> dict[str, Any]:
        load = self.load
        return {"worker": self.index, "device": self.device, "url": self.url, "alive": self.alive,
                "exit_code": self.exit_code, "sessions": sorted(self.sessions),
                "capacity": load.capacity if load else None, "late_frames": load.late_frames if load else None}


@dataclass(frozen=True)
class Placement:
    """Where a session lives: its worker, and the URLs its clients use."""

    session: str
    worker: int
    api: str
    whep: str

    def describe(self) -> dict[str, Any]:
        return {"id": self.session, "worker": self.worker, "api": self.api, "whep": self.whep}


def least_loaded(workers: Sequence[Worker]) -> list[Worker]:
    """The running workers that reported a load with room, emptiest first (then fewest late frames)."""
    ready = [w for w in workers if w.alive and w.load is not None and w.load.share < 1.0]
    return sorted(ready, key=lambda w: (w.load.share if w.load else 1.0, w.load.late_frames if w.load else 0,
                                        w.index))


class Supervisor:
    """Starts `len(devices)` workers and places sessions on them (see the module docstring)."""

    def __init__(self, devices: Sequence[str | None], config: Path | None = None,
                 command: Sequence[str] | None = None, retry_after_s: int = 30, token: str | None = None) -> None:
        if not devices:
            raise UserError("the supervisor needs at least one worker: give --workers N or --gpus 0,1,...")
        self.devices = list(devices)
        self.config = config
        self.command = list(command) if command is not None else [sys.executable, "-m", "bridge.cli"]
        self.retry_after_s = retry_after_s
        self.token = token  # the config's http.token: workers and their clients use the one the front takes
        self.workers: list[Worker] = []
        self.placements: dict[str, Placement] = {}
        self.ended: dict[str, str] = {}  # session → why it ended without being asked (bounded)
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    # --- workers ------------------------------------------------------------------------------------------

    def _environment(self, device: str | None) -> dict[str, str]:
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        env.update({"AVATAR_BRIDGE__HTTP__PORT": "0", "AVATAR_BRIDGE__OSC__ENABLED": "false",
                    "AVATAR_BRIDGE__VMC__ENABLED": "false", "AVATAR_BRIDGE__MIDI__ENABLED": "false"})
        return env

    async def start(self) -> None:
        """Start every worker and wait until each serves (or failed to start: then it is reported dead)."""
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = aiohttp.ClientSession(headers=auth, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        argv = [*self.command, "run", *(["--config", str(self.config)] if self.config is not None else [])]
        for index, device in enumerate(self.devices):
            process = await asyncio.create_subprocess_exec(*argv, env=self._environment(device),
                                                           stdin=asyncio.subprocess.DEVNULL,
                                                           stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=asyncio.subprocess.PIPE)
            self.workers.append(Worker(index, device, process))
        ready = [asyncio.get_running_loop().create_future() for _ in self.workers]
        for worker, started in zip(self.workers, ready, strict=True):
            self._spawn(self._follow(worker, started))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.gather(*ready)
        if not any(w.alive for w in self.workers):
            tails = "; ".join(w.log_tail[-1] if w.log_tail else "no output" for w in self.workers)
            raise UserError(f"no worker started ({tails}); run `avatar-bridge run` with the same config to see why")
        await self.refresh()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, worker: Worker, started: asyncio.Future[None]) -> None:
        """Read the worker's log (its port, then its last lines) until it exits; then end its sessions."""
        stream = worker.process.stderr
        assert stream is not None
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line beyond the stream's limit: drop what is buffered, keep reading
                line = await stream.read(1 << 16)
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip()[:2000]
            worker.log_tail = [*worker.log_tail[-(MAX_LOG_LINES - 1):], text]
            match = READY.search(text)
            if match and not worker.url:
                host = "127.0.0.1" if match.group(1) in WILDCARD else match.group(1)
                worker.url = f"http://{host}:{match.group(2)}"
                log.info("worker %d (GPU %s) serves %s", worker.index, worker.device, worker.url)
                if not started.done():
                    started.set_result(None)
        worker.exit_code = await worker.process.wait()
        if not started.done():
            started.set_result(None)
        self._worker_died(worker)

    def _worker_died(self, worker: Worker) -> None:
        why = f"worker {worker.index} (GPU {worker.device}) exited with code {worker.exit_code}"
        log.warning("%s; its %d session(s) ended", why, len(worker.sessions))
        for name in worker.sessions:
            self.placements.pop(name, None)
            self.ended[name] = why
        worker.sessions.clear()
        while len(self.ended) > 1024:
            self.ended.pop(next(iter(self.ended)))

    async def _get(self, worker: Worker, path: str) -> tuple[int, Any]:
        assert self._http is not None
        async with self._http.get(worker.url + path) as r:
            return r.status, await r.json()

    async def refresh(self) -> None:
        """Ask every running worker for its load (a worker that does not answer gets none: no placements)."""

        async def one(worker: Worker) -> None:
            try:
                status, body = await self._get(worker, "/api/sessions")
            except (aiohttp.ClientError, TimeoutError, ValueError):
                worker.load = None
                return
            if status != 200:
                worker.load = None
                return
            listing = body["sessions"]
            worker.load = WorkerLoad(len(listing), body.get("capacity"), sum(int(s["late_frames"]) for s in listing))

        await asyncio.gather(*(one(w) for w in self.workers if w.alive))

    # --- sessions -------------------------------------------------------------------------------------------

    async def create_session(self, spec: dict[str, Any]) -> Placement:
        """Create a session on the least loaded worker that takes it; raises SessionsFull when none has room,
        RecordingRefused when those with room record all they may, UserError when the workers refuse the spec."""
        assert self._http is not None
        await self.refresh()
        recording_refused: str | None = None
        for worker in least_loaded(self.workers):
            try:
                async with self._http.post(worker.url + "/api/sessions", json=spec) as r:
                    body = await r.json()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue  # gone meanwhile: the next one
            if status == 503:
                continue
            if status == 409:  # it records as many sessions as it may (sessions.max_recordings): another may not
                recording_refused = str(body.get("error", f"worker {worker.index} records all it may"))
                continue
            if status != 201:
                raise UserError(str(body.get("error", f"worker {worker.index} answered {status}")))
            name = str(body["id"])
            placement = Placement(name, worker.index, f"{worker.url}/api/sessions/{name}",
                                  f"{worker.url}/sessions/{name}/whep")
            worker.sessions.add(name)
            self.placements[name] = placement
            return placement
        if recording_refused is not None:
            raise RecordingRefused(recording_refused)
        raise SessionsFull("every worker already serves as many sessions as it can", self.retry_after_s)

    async def end_session(self, name: str) -> bool:
        placement = self.placements.pop(name, None)
        if placement is None:
            return False
        worker = self.workers[placement.worker]
        worker.sessions.discard(name)
        assert self._http is not None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._http.delete(f"{worker.url}/api/sessions/{name}") as r:
                await r.read()
        return True

    def describe(self) -> dict[str, Any]:
        return {"workers": [w.describe() for w in self.workers],
                "sessions": [p.describe() for p in self.placements.values()],
                "ended": [{"id": k, "error": v} for k, v in self.ended.items()]}

    async def stop(self) -> None:
        """Stop the workers (SIGTERM, then SIGKILL after 10 s) and close the client."""
        for worker in self.workers:
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
