"""`avatar-bridge demo` and `avatar-bridge run`: start the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bridge.core.config import Config, load_config
from bridge.core.errors import UserError


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 512x512") from None
    return w, h


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of video")
    p.add_argument("--record", type=Path, default=None, metavar="FILE", help="record video + audio to FILE: .mp4 or .mkv; .webm (VP9) or .mov (ProRes 4444) keep alpha")
    p.add_argument("--size", type=parse_size, default=None, metavar="WxH", help="output size, e.g. 512x512")
    p.add_argument("--fps", type=int, default=None, choices=(25, 30, 60), help="frame rate")
    p.add_argument("--audio", type=Path, default=None, metavar="FILE", help="drive the avatar from this audio file")
    p.add_argument("--mic", default=None, metavar="DEVICE", help="drive the avatar from a microphone (name or index)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (0 picks a free one)")
    p.add_argument("--no-http", action="store_true", help="do not serve the HTTP panel, API and WebRTC")
    p.add_argument("--fast", action="store_true", help="with a file: render as fast as possible, no real-time pacing")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        over.setdefault(section, {})[key] = value

    if args.size is not None:
        put("video", "width", args.size[0])
        put("video", "height", args.size[1])
    if args.fps is not None:
        put("video", "fps", args.fps)
    if args.audio is not None:
        put("audio", "source", "file")
        put("audio", "file", str(args.audio))
    if args.mic is not None:
        put("audio", "source", "microphone")
        put("audio", "device", int(args.mic) if str(args.mic).isdigit() else args.mic)
    if args.fast:
        put("audio", "realtime", False)
    if args.port is not None:
        put("http", "port", args.port)
    if args.no_http:
        put("http", "enabled", False)
    return over


def start_daemon(config: Config, args: argparse.Namespace) -> int:
    from bridge.http.app import build_app
    from bridge.runtime.daemon import Daemon

    if args.record is not None and not args.record.parent.exists():
        raise UserError(f"cannot record to {args.record}: folder {args.record.parent} does not exist")

    def say(msg: str) -> None:
        print(f"avatar-bridge: {msg}", file=sys.stderr, flush=True)

    started = time.monotonic()
    daemon = Daemon(config, duration=args.duration, record=args.record, progress=say, http_app=build_app)

    def ready(d: Daemon) -> None:
        where = f"http://{config.http.host}:{d.http_port}/" if d.http_port else "no HTTP"
        say(
            f"running: {config.avatar.kind} avatar {config.video.width}x{config.video.height} @ {config.video.fps} fps, "
            f"{config.face.driver} face driver, {config.audio.source} audio, A/V delay {d.av_delay * 1000:.0f} ms, "
            f"{where} (ready in {time.monotonic() - started:.1f} s; Ctrl-C to stop)"
        )

    code = asyncio.run(daemon.serve(ready))
    print(daemon.stats.report(), file=sys.stderr)
    failures = daemon.output_failures()
    for failure in failures:
        say(f"error: {failure}" if isinstance(failure, UserError) else f"error: an output failed: {failure}")
    if failures:
        return code or 1
    if args.record is not None:
        recorded = args.record.is_file() and args.record.stat().st_size > 0
        say(f"recorded {args.record}" if recorded else "nothing was recorded: the daemon stopped before its first frame")
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    # The config's 1280x720 with the webcam framing: the head renders only its region (about 290x360 pixels),
    # which the CPU renderer keeps up with as it did with the whole 256x256 frame of earlier releases.
    base: dict[str, Any] = {"audio": {"source": "file", "loop": True}}
    over = overrides_from(args)
    for section, values in over.items():
        base.setdefault(section, {}).update(values)
    config = load_config(args.config, overrides=base)
    return start_daemon(config, args)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides=overrides_from(args))
    return start_daemon(config, args)


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the daemon on the embedded demo head and demo speech (no GPU, no downloads)",
        description="Run the full daemon on the embedded defaults: demo avatar, demo speech clip on a loop.",
    )
    add_run_options(demo)
    demo.add_argument("--config", type=Path, default=None, help="optional TOML config to start from")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run the daemon from a TOML config", description="Run the daemon.")
    run.add_argument("--config", type=Path, default=None, help="TOML config file (defaults for everything else)")
    add_run_options(run)
    run.set_defaults(func=cmd_run)
