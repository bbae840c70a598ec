"""Driver names have one source: the registry (and, for renderer, device and codec choices, the driver module
that implements them). The config's choices must be exactly those names, and every entry must build itself
from the config."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, get_args

from bridge.core.config import AudioConfig, AvatarConfig, FaceConfig, WebRTCConfig
from bridge.runtime import registry


def choices(model: Any, field: str) -> set[str]:
    return set(get_args(model.model_fields[field].annotation))


def test_config_choices_are_the_registered_names() -> None:
    assert choices(AudioConfig, "source") == set(registry.names("audio"))
    assert choices(FaceConfig, "driver") == set(registry.names("face"))
    assert choices(AvatarConfig, "kind") == set(registry.names("avatar"))


def test_config_choices_are_the_backends_that_exist() -> None:
    from drivers.avatar.splat.select import DEVICES, RENDERERS
    from drivers.output.webrtc.codecs import MIME_TYPES

    assert choices(AvatarConfig, "renderer") == set(RENDERERS)
    assert choices(AvatarConfig, "device") == set(DEVICES)
    assert choices(WebRTCConfig, "codec") == set(MIME_TYPES)


def test_every_registered_driver_builds_from_the_config() -> None:
    """Each entry names a class with `from_config(config, ...)` whose collaborators are keyword-only."""
    for kind, table in registry.DRIVERS.items():
        for name, target in table.items():
            module_name, _, attr = target.partition(":")
            cls = getattr(importlib.import_module(module_name), attr)
            factory = inspect.getattr_static(cls, "from_config", None)
            assert isinstance(factory, classmethod), f"{kind} {name}: {target} has no from_config classmethod"
            params = list(inspect.signature(cls.from_config).parameters.values())
            assert params and params[0].name == "config", f"{target}.from_config must take the config first"
            extra = [p for p in params[1:] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
            assert not extra, f"{target}.from_config: collaborators must be keyword-only, not {extra}"
