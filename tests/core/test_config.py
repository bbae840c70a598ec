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


REFUSED = [
    ("[pipeline]\nav_delay_ms = nan", "pipeline.av_delay_ms", "0..5000"),
    ("[pipeline]\nav_delay_ms = -100000", "pipeline.av_delay_ms", "0..5000"),
    ("[pipeline]\nav_delay_ms = 1e12", "pipeline.av_delay_ms", "0..5000"),
    ("[outputs.passthrough]\ndelay_ms = -5", "outputs.passthrough.delay_ms", "0..5000"),
    ("[outputs.passthrough]\ndelay_ms = nan", "outputs.passthrough.delay_ms", "0..5000"),
    ('[osc]\nallow = ["not-an-ip"]', "osc.allow", "192.168.1.0/24"),
    ('[mixer]\nmodes = { "blend/jawOpn" = "override" }', "mixer.modes", "blend/<ARKit name>"),
    ('[mixer]\nmodes = { mouth = "add" }', "mixer.modes", "docs/controls.md"),
    ('[mixer]\nmodes = { "flame/expression/100" = "add" }', "mixer.modes", "flame/expression/<0-99>"),
    ("[osc]\nmax_packets_per_second = 1e-300", "osc.max_packets_per_second", "greater than or equal to 1"),
    ("[vmc]\nmax_packets_per_second = 1e-300", "vmc.max_packets_per_second", "greater than or equal to 1"),
    ('[http]\nallowed_origins = ["http://*.example"]', "http.allowed_origins", "wildcards are not supported"),
    ('[http]\nallowed_hosts = ["*"]', "http.allowed_hosts", "wildcards are not supported"),
    ('[webrtc]\nwhip_url = "file:///etc/passwd"', "webrtc.whip_url", "http(s) WHIP endpoint"),
    ('[face.diffposetalk]\ncfg_audio = inf', "face.diffposetalk.cfg_audio", "finite number"),
]


@pytest.mark.parametrize(("text", "field", "fix"), REFUSED, ids=[r[1] + ":" + r[0].split("=", 1)[1].strip()
                                                                 for r in REFUSED])
def test_what_the_api_refuses_the_config_refuses(tmp_path: Path, text: str, field: str, fix: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert field in message and fix in message, message


def test_the_good_neighbours_of_those_values_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[pipeline]\nav_delay_ms = 250\n[outputs.passthrough]\ndelay_ms = 0\n'
                    '[osc]\nallow = ["192.168.1.0/24", "::1"]\nmax_packets_per_second = 1\n'
                    '[mixer]\nmodes = { eyes = "add", "blend/jawOpen" = "override", "flame/expression/99" = "add", '
                    '"flame/jaw" = "override", gaze = "add", head = "add" }\n'
                    '[http]\nallowed_origins = ["https://player.example:8443/"]\nallowed_hosts = ["studio.lan:8080"]\n'
                    '[webrtc]\nwhip_url = "https://media.example/whip/room1"\n')
    cfg = load_config(path, environ={})
    assert cfg.pipeline.av_delay_ms == 250 and cfg.outputs.passthrough.delay_ms == 0
    assert cfg.mixer.modes["flame/expression/99"] == "add" and cfg.http.allowed_origins == ["https://player.example:8443"]


def test_a_file_url_for_whip_is_one_error_at_the_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "c.toml"
    path.write_text('[webrtc]\nwhip_url = "file:///etc/passwd"\n')
    run = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(path), "--duration", "1"],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "webrtc.whip_url" in run.stderr and "http(s) WHIP endpoint" in run.stderr
