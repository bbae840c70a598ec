"""`avatar-bridge midi`: list ports, learn a binding, monitor messages, show a map."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bridge.commands._http import add_daemon_args, call
from bridge.controls.presets import presets_dir
from bridge.core.errors import UserError


def _ports() -> list[str]:
    from drivers.control.midi import MidiError, input_names

    try:
        return input_names()
    except MidiError as exc:
        raise UserError(str(exc)) from None


def cmd_list(args: argparse.Namespace) -> int:
    ports = _ports()
    print("MIDI inputs:" if ports else "no MIDI input ports: plug a device in (it is picked up while running)")
    for p in ports:
        print(f"  {p}")
    return 0


def _open(port: str | None) -> Any:
    import mido

    ports = _ports()
    chosen = [p for p in ports if not port or port.lower() in p.lower()]
    if not chosen:
        raise UserError(f"no MIDI input matches {port!r}; inputs: {', '.join(ports) or 'none'}")
    return mido.open_input(chosen[0])


def cmd_learn(args: argparse.Namespace) -> int:
    if args.daemon:
        call(args, "POST", "/api/midi/learn/start", {"target": args.target})
        print(f"move the MIDI control to bind to {args.target} (the running daemon listens)")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            status = call(args, "GET", "/api/midi")
            if not status.get("learning"):
                print(f"bound: {status.get('learned', [])[-1:]}; map saved to {status.get('map')}")
                return 0
            time.sleep(0.2)
        call(args, "POST", "/api/midi/learn/stop", {})
        raise UserError(f"no MIDI control moved within {args.timeout:.0f} s")
    from drivers.control.midi import DEFAULT_MAP, MidiMap, MidiMapper

    path = Path(args.map) if args.map else DEFAULT_MAP
    midi_map = MidiMap.load(path) if path.is_file() else MidiMap(path=path)
    mapper = MidiMapper(midi_map)
    mapper.learn_start(args.target)
    with _open(args.port) as port:
        print(f"move the control on {port.name} to bind to {args.target} ...")
        deadline = time.monotonic() + args.timeout
        while mapper.learning is not None and time.monotonic() < deadline:
            for msg in port.iter_pending():
                mapper.handle(msg)
            time.sleep(0.01)
    if mapper.learning is not None:
        raise UserError(f"no MIDI control moved within {args.timeout:.0f} s")
    print(f"bound {mapper.learned[-1]} → saved to {midi_map.path}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    end = time.monotonic() + args.duration if args.duration else None
    with _open(args.port) as port:
        print(f"listening to {port.name} (Ctrl+C to stop)")
        while end is None or time.monotonic() < end:
            for msg in port.iter_pending():
                print(msg)
            time.sleep(0.01)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from drivers.control.midi import MidiError, MidiMap

    try:
        m = MidiMap.load(Path(args.map))
    except MidiError as exc:
        raise UserError(str(exc)) from None
    print(f"{args.map}: {len(m.bindings)} bindings" + (f" for {m.device}" if m.device else ""))
    for b in m.bindings:
        where = f"{b.kind} {b.control if b.control is not None else ''}".strip()
        ch = f" ch{b.channel + 1}" if b.channel is not None else ""
        print(f"  {where}{ch:5} → {b.target} [{b.mode}, {b.min}..{b.max}, {b.curve}]")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("midi", help="MIDI controllers: list ports, learn bindings, monitor, show maps")
    ms = p.add_subparsers(dest="midi_command", metavar="ACTION", required=True)
    ms.add_parser("list", help="list MIDI input ports").set_defaults(func=cmd_list)
    q = ms.add_parser("learn", help="bind the next moved control to TARGET and save the map")
    q.add_argument("target", help="a control target, e.g. blend/jawOpen, preset/smile, gaze (see docs/controls.md)")
    q.add_argument("--port", help="input port name (substring); default: the first")
    q.add_argument("--map", help="map file to add to (default: midi/learned.toml in your presets folder)")
    q.add_argument("--timeout", type=float, default=30.0)
    q.add_argument("--daemon", action="store_true", help="learn through the running daemon instead of opening the port")
    add_daemon_args(q)
    q.set_defaults(func=cmd_learn)
    q = ms.add_parser("monitor", help="print incoming MIDI messages")
    q.add_argument("--port")
    q.add_argument("--duration", type=float, default=0.0)
    q.set_defaults(func=cmd_monitor)
    q = ms.add_parser("show", help="print a MIDI map")
    q.add_argument("map", nargs="?", default=str(presets_dir() / "midi" / "nanokontrol2.toml"))
    q.set_defaults(func=cmd_show)
