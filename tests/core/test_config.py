from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.config import ConfigError, env_overrides, load_config


def test_defaults_need_no_file() -> None:
    cfg = load_config(environ={})
    assert cfg.video.fps == 25 and cfg.avatar.kind == "demo" and cfg.face.driver == "procedural"
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 8080)
    assert (cfg.osc.port, cfg.vmc.port) == (9000, 39539)


def test_error_names_field_value_and_fix(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[video]\nfps = 24\nwidht = 3\n[avatar]\nbackground = "green"\n')
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    text = str(err.value)
    assert "video.fps = 24" in text and "25, 30 or 60" in text
    assert "unknown setting 'widht'" in text
    assert "avatar.background" in text and "hex colour" in text


def test_odd_size_and_wide_bind_without_token_are_explained() -> None:
    with pytest.raises(ConfigError, match="video.width = 513: must be even"):
        load_config(overrides={"video": {"width": 513}}, environ={})
    with pytest.raises(ConfigError, match="set http.token"):
        load_config(overrides={"http": {"host": "0.0.0.0"}}, environ={})


def test_flashavatar_needs_its_files() -> None:
    with pytest.raises(ConfigError, match=r"avatar.checkpoint and avatar.flame_model"):
        load_config(overrides={"avatar": {"kind": "flashavatar"}}, environ={})


def test_env_overrides_are_parsed_as_toml_values(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[video]\nfps = 30\n")
    env = {"AVATAR_BRIDGE__VIDEO__FPS": "60", "AVATAR_BRIDGE__OSC__ENABLED": "false", "AVATAR_BRIDGE__HTTP__TOKEN": "s3cret"}
    cfg = load_config(f, environ=env)
    assert cfg.video.fps == 60 and cfg.osc.enabled is False and cfg.http.token == "s3cret"
    assert env_overrides({"AVATAR_BRIDGE__AVATAR__BACKGROUND": "[0, 1, 0]"}) == {"avatar": {"background": [0, 1, 0]}}


def test_bad_env_override_is_reported_as_such() -> None:
    with pytest.raises(ConfigError, match="environment overrides"):
        load_config(environ={"AVATAR_BRIDGE__VIDEO__FPS": "fast"})


def test_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[video\nfps=25")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "c.toml"
    f.write_text('[audio]\nfile = "speech.wav"\n[outputs.record]\npath = "out.mp4"\n')
    cfg = load_config(f, environ={})
    assert cfg.audio.file == tmp_path / "sub" / "speech.wav"
    assert cfg.outputs.record.path == tmp_path / "sub" / "out.mp4"
