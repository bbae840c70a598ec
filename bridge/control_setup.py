"""Builds the daemon's control surfaces (OSC, VMC, MIDI) from the config."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bridge.interfaces import ControlSurface

if TYPE_CHECKING:
    from bridge.daemon import Daemon

log = logging.getLogger(__name__)


def _state(daemon: Any) -> Any:
    mixer = getattr(daemon, "mixer", None)
    return mixer.state if mixer is not None and hasattr(mixer, "state") else None


def create_control_surfaces(daemon: Daemon) -> list[ControlSurface]:
    """The enabled surfaces, not yet started (the daemon starts them on its loop)."""
    cfg = daemon.config
    surfaces: list[ControlSurface] = []
    if cfg.osc.enabled:
        from drivers.control.osc import OscControlSurface

        surfaces.append(OscControlSurface.from_config(cfg.osc, state=_state(daemon)))
    if cfg.vmc.enabled:
        from drivers.control.vmc import VmcControlSurface

        surfaces.append(VmcControlSurface.from_config(cfg.vmc, allow=cfg.osc.allow))
    if cfg.midi.enabled:
        from drivers.control.midi import MidiControlSurface, MidiError

        try:
            surfaces.append(MidiControlSurface.from_config(cfg.midi))
        except MidiError as exc:
            log.warning("MIDI input is off: %s", exc)
    return surfaces


def find_surface(daemon: Any, name: str) -> Any:
    """A running surface by name (e.g. "midi"), or None."""
    for s in getattr(daemon, "control_surfaces", []) or []:
        if getattr(s, "name", None) == name:
            return s
    return None
