"""Bearer tokens: weak ones are refused by the configuration when the daemon is reachable from other machines,
the token is needed by everything but /health and the static pages, and it never appears in logs, answers or
URLs the daemon sends back."""

from __future__ import annotations

import subprocess
import sys

import pytest
import tomli_w

from bridge.core.config import ConfigError, load_config
from tests.security.conftest import TOKEN, FakeStun
from tests.security.daemon import REPO, DaemonProcess, wait_for


def test_a_blank_token_bound_wide_is_refused_with_a_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "wide.toml"
    config.write_text(tomli_w.dumps({"http": {"host": "0.0.0.0", "port": 0, "token": " "}}))
    run = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(config)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "http.token" in run.stderr and "secrets.token_urlsafe" in run.stderr, run.stderr


@pytest.mark.parametrize("token", ["", " ", "\t\n", "short", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababab",
                                   "0123456"])
def test_weak_tokens_are_refused_when_bound_wide(token: str) -> None:
    with pytest.raises(ConfigError, match=r"http\.token"):
        load_config(None, overrides={"http": {"host": "0.0.0.0", "token": token}}, environ={})


def test_a_strong_token_is_accepted_and_loopback_needs_none() -> None:
    assert load_config(None, overrides={"http": {"host": "0.0.0.0", "token": TOKEN}}, environ={}).http.token == TOKEN
    assert load_config(None, overrides={"http": {"host": "127.0.0.1"}}, environ={}).http.token is None


def test_the_token_guards_the_api_and_never_leaks(guarded: DaemonProcess) -> None:
    frames = int(guarded.request("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).json["frames"])
    near_misses = [TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " " + TOKEN, TOKEN[:-1] + "\u00e9"]
    for path in ("/api/status", "/api/state", "/metrics", "/api/webrtc/viewers", "/api/openapi.json"):
        assert guarded.request("GET", path).status == 401
        for wrong in near_misses:
            answer = guarded.request("GET", path, headers={"Authorization": f"Bearer {wrong}".encode().decode("latin-1")})
            assert answer.status == 401, (path, wrong)
        # A token in the URL ends up in histories and logs: it is not accepted there.
        assert guarded.request("GET", f"{path}?token={TOKEN}").status == 401
    answer = guarded.request("POST", "/api/freeze", '{"frozen": true}', {"Content-Type": "application/json"})
    assert answer.status == 401 and answer.json["fix"]
    # Pages hold no data: they load without the token and never echo one given in their URL.
    for path in (f"/panel/?token={TOKEN}", f"/viewer?token={TOKEN}", f"/?token={TOKEN}", "/panel/panel.js"):
        page = guarded.request("GET", path)
        assert page.status in (200, 302), (path, page)
        assert TOKEN not in page.body.decode() and TOKEN not in page.headers.get("location", ""), path
    assert guarded.request("GET", "/health").status == 200
    ok = guarded.request("GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
    wait_for(lambda: int(guarded.request("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
                         .json["frames"]) > frames + 5, 60, "rendering went on")
    log = guarded.log()
    assert "DEBUG" in log, "the daemon ran without verbose logs; the check below would prove nothing"
    assert TOKEN not in log
    for wrong in near_misses[:3]:
        assert wrong not in log


async def test_a_configured_stun_server_is_used(guarded: DaemonProcess, stun: FakeStun) -> None:
    from tests.security.test_webrtc_sessions import client, make_offer, post_whep

    listing = guarded.request("GET", "/api/webrtc/viewers", headers={"Authorization": f"Bearer {TOKEN}"}).json
    assert listing["ice_servers"] == [f"stun:127.0.0.1:{stun.port}"]
    before = stun.requests
    async with client() as http:
        answer = await post_whep(http, guarded, await make_offer(), {"Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 201, answer
    assert stun.requests > before
    assert guarded.request("DELETE", answer.headers["location"],
                           headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
