"""`avatar-bridge workers`: sessions on several GPUs, one worker daemon per GPU behind one front for creating
them (see docs/sessions.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from bridge.core.config import load_config
from bridge.core.errors import UserError

MAX_PER_GPU = 16


def devices_of(args: argparse.Namespace) -> list[str | None]:
    """--gpus 0,1,3 pins one worker to each (--per-gpu K: K workers to each, every one with its own Python
    interpreter, whose lock otherwise bounds the sessions one process drives); --workers N starts N unpinned
    ones (the CPU, or a test)."""
    if args.gpus:
        gpus = [g.strip() for g in args.gpus.split(",")]
        if not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus) or len(gpus) > 64:
            raise UserError(f"--gpus {args.gpus!r} is not a list of distinct GPU indices, e.g. --gpus 0,1")
        if not 1 <= args.per_gpu <= MAX_PER_GPU:
            raise UserError(f"--per-gpu {args.per_gpu}: give 1 to {MAX_PER_GPU} workers per GPU")
        return [g for g in gpus for _ in range(args.per_gpu)]
    if not 1 <= args.workers <= 64:
        raise UserError("--workers must be 1 to 64")
    return [None] * args.workers


async def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bridge.http.front import build_front
    from bridge.runtime.workers import Supervisor

    config = load_config(args.config)
    supervisor = Supervisor(devices_of(args), config=args.config, retry_after_s=config.sessions.retry_after_s,
                            token=config.http.token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(build_front(supervisor, config.http), handle_signals=False, access_log=None)
    try:
        await supervisor.start()
        await runner.setup()
        port = config.http.port if args.port is None else args.port
        site = web.TCPSite(runner, config.http.host, port)
        try:
            await site.start()
        except OSError as exc:
            raise UserError(f"cannot serve HTTP on {config.http.host}:{port} ({exc.strerror}); pick a free --port") from exc
        bound = [a for a in runner.addresses if isinstance(a, tuple)]
        alive = sum(1 for w in supervisor.workers if w.alive)
        print(f"avatar-bridge: running: {alive} of {len(supervisor.workers)} workers, sessions at "
              f"http://{config.http.host}:{bound[0][1] if bound else port}/api/sessions (Ctrl-C to stop)",
              file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await supervisor.stop()
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))


def register(sub: Any) -> None:
    p = sub.add_parser("workers", help="serve sessions from one worker daemon per GPU",
                       description="Start one daemon per GPU (pinned with CUDA_VISIBLE_DEVICES) and place each new "
                       "session on the least loaded one; POST /api/sessions here answers where it lives.")
    p.add_argument("--config", type=Path, default=None, help="TOML config of every worker (and of this front's [http])")
    p.add_argument("--gpus", default=None, metavar="0,1,...", help="one worker per listed GPU")
    p.add_argument("--per-gpu", type=int, default=1, metavar="K",
                   help="K workers on each listed GPU (default 1); see docs/sessions.md for when more pay")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="N unpinned workers (without --gpus)")
    p.add_argument("--port", type=int, default=None, help="HTTP port of the front (0 picks a free one)")
    p.set_defaults(func=cmd_workers)
