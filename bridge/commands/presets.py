"""`avatar-bridge presets`: list, show, check, apply, capture and reload expression presets and emotions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bridge.commands._http import add_daemon_args, call
from bridge.core.errors import UserError


def _library(args: argparse.Namespace) -> Any:
    from bridge.controls.presets import PresetLibrary

    directory = Path(args.dir) if getattr(args, "dir", None) else None
    if directory is None and getattr(args, "config", None):
        from bridge.core.config import load_config

        directory = load_config(args.config).presets.dir
    if directory is not None and not directory.is_dir():
        raise UserError(f"presets folder {directory} does not exist; give an existing folder (or none for the "
                        "shipped presets)")
    return PresetLibrary(directory)


def cmd_list(args: argparse.Namespace) -> int:
    lib = _library(args)
    print(f"your presets: {lib.directory} (read before the shipped ones)")
    for kind in ("preset", "emotion"):
        names = lib.names(kind)
        print(f"{kind}s ({len(names)}): {', '.join(names) or '-'}")
    for path, err in lib.errors.items():
        print(f"error in {path}: {err}")
    return 1 if lib.errors else 0


def cmd_show(args: argparse.Namespace) -> int:
    lib = _library(args)
    for kind in ("preset", "emotion"):
        p = lib.get(kind, args.name)
        if p is not None:
            print(json.dumps(p.to_json(), indent=2))
            return 0
    raise UserError(f"no preset or emotion named {args.name!r}; see 'avatar-bridge presets list'")


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.controls.arkit_maps import load_for_avatar
    from bridge.controls.presets import MapError

    lib = _library(args)
    problems = dict(lib.errors)
    for avatar in ("demo", "flashavatar"):
        try:
            load_for_avatar(avatar, lib.directory)
        except MapError as exc:
            problems[f"ARKit map for {avatar}"] = str(exc)
    for where, err in problems.items():
        print(f"{where}: {err}")
    if not problems:
        print(f"presets in {lib.directory}: OK ({len(lib.names('preset'))} presets, {len(lib.names('emotion'))} emotions)")
    return 1 if problems else 0


def cmd_apply(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "kind": args.kind, "value": args.value}
    if args.fade is not None:
        body["fade"] = args.fade
    call(args, "POST", "/api/presets/apply", body)
    print(f"{args.kind} {args.name} → {args.value}")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    result = call(args, "POST", "/api/presets/capture", {"name": args.name})
    print(f"saved preset {args.name!r} to {result.get('path')}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    result = call(args, "POST", "/api/presets/reload", {})
    for path, err in (result.get("errors") or {}).items():
        print(f"error in {path}: {err}")
    print(f"reloaded: {len(result.get('presets', []))} presets, {len(result.get('emotions', []))} emotions")
    return 1 if result.get("errors") else 0


def register(sub: Any) -> None:
    p = sub.add_parser("presets", help="expression presets and emotions (list, capture, apply, reload)")
    ps = p.add_subparsers(dest="presets_command", metavar="ACTION", required=True)
    for name, func, text in (("list", cmd_list, "list presets and emotions"),
                             ("check", cmd_check, "validate the presets and ARKit map files")):
        q = ps.add_parser(name, help=text)
        q.add_argument("--dir", help="presets folder (default: presets.dir of --config, else the shipped ones)")
        q.add_argument("--config", help="config file")
        q.set_defaults(func=func)
    q = ps.add_parser("show", help="print one preset's contents")
    q.add_argument("name")
    q.add_argument("--dir")
    q.add_argument("--config")
    q.set_defaults(func=cmd_show)
    q = ps.add_parser("apply", help="fade a preset or emotion in (or out with value 0) on the running daemon")
    q.add_argument("name")
    q.add_argument("value", nargs="?", type=float, default=1.0)
    q.add_argument("--kind", choices=("preset", "emotion"), default="preset")
    q.add_argument("--fade", type=float, help="fade time in seconds")
    add_daemon_args(q)
    q.set_defaults(func=cmd_apply)
    q = ps.add_parser("capture", help="save the running daemon's current expression as a preset")
    q.add_argument("name")
    add_daemon_args(q)
    q.set_defaults(func=cmd_capture)
    q = ps.add_parser("reload", help="make the running daemon re-read its presets now")
    add_daemon_args(q)
    q.set_defaults(func=cmd_reload)
