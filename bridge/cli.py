"""`avatar-bridge`: the command line. Sub-commands live in `bridge.commands.*`, one module per area."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from bridge import __version__
from bridge.core.errors import UserError

__all__ = ["UserError", "build_parser", "main"]

# OpenMP threads that spin while they wait steal each other's turns on a busy machine: beside a browser and a
# call app the CPU renderer ran 10-20x slower. Waiting threads sleep instead (read when torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMAND_MODULES = (
    "bridge.commands.core",  # demo, run, devices
    "bridge.commands.doctor",
    "bridge.commands.bench",
    "bridge.commands.avatar",
    "bridge.commands.face",
    "bridge.commands.presets",
    "bridge.commands.midi",
    "bridge.commands.calibrate",
    "bridge.commands.workers",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-bridge",
        description="Put a 3D-Gaussian head avatar, driven by your voice and live controls, into calls and streams.",
    )
    parser.add_argument("--version", action="version", version=f"avatar-bridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. As the program itself (no `argv`), it then leaves at once: see `leave`."""
    code = run(argv)
    if argv is None:
        leave(code)
    return code


def leave(code: int) -> None:
    """Exit without the interpreter's teardown. Freeing torch, PyAV and aiortc state took 3-10 s after a
    daemon stopped. And a render still running in torch on the pipeline's render thread (a daemon thread, not
    waited for: a stop must not wait for a render) aborted the process: finalising CPython ends such a thread
    with pthread_exit when it takes the GIL back, and that forced unwind through torch's pybind11 frames
    calls std::terminate ("terminate called without an active exception"). Every command has closed its
    files and outputs by the time it returns (nothing here uses atexit), so only the standard streams and
    the log handlers are left to flush."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from bridge.core.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as exc:
        print(f"avatar-bridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
