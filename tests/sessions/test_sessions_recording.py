"""Sessions record into files the daemon names, in the folder its config names, over the real loopback: one
session records from its creation, ending it leaves a playable MP4 while its neighbour keeps rendering,
another starts and stops its recording over HTTP, and what a request might use to steer the daemon's writes (a
path, a name, a page of another origin, a form post) or to record without bound is refused with one line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from bridge.core.config import ConfigError, load_config
from bridge.core.errors import UserError
from bridge.runtime.recordings import Recorders, default_record_dir, file_name
from bridge.runtime.sessions import SessionRegistry
from tests.commands.test_cli import cli, env
from tests.conftest import read_recording, started_daemon, stopped_daemon
from tests.output.conftest import wait_until
from tests.output.test_recording_files import limit_file_size
from tests.sessions.test_sessions_api import SMALL, Api, rendered, sessions_daemon

FILE = re.compile(r"^[a-z0-9_-]+-\d{8}-\d{6}Z(-\d+)?\.mp4$")


def video_of(path: Path) -> tuple[str, int, int, int]:
    """(codec, width, height, decoded frames) of a recording, decoded with PyAV as a player would."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec, width, height = stream.codec_context.name, stream.codec_context.width, stream.codec_context.height
    return codec, width, height, len(read_recording(path).brightness)


async def recorded_frames(api: Api, prefix: str) -> int:
    status, body, _ = await api.call("GET", f"{prefix}/record")
    assert status == 200, body
    return int(body["frames"]) if body["recording"] else -1


async def until_recorded(api: Api, prefix: str, frames: int) -> None:
    """Until the session's recording has `frames` frames in its file (counted by the recorder)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while (seen := await recorded_frames(api, prefix)) < frames:
        assert loop.time() < end, f"{prefix} recorded {seen} frames, not {frames}, within 30 s"
        await asyncio.sleep(0.05)


async def test_sessions_record_to_files_the_daemon_names_and_ending_one_finalises_it(tmp_path: Path) -> None:
    folder = tmp_path / "recordings" / "made-on-need"
    sessions = {"max": 5, "max_recordings": 2, "record_dir": str(folder),
                "fixed": [{"name": "stage", "audio": "silence", "record": True}]}
    async with sessions_daemon(sessions=sessions) as daemon, aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        status, stage, _ = await api.call("GET", "/api/sessions/stage")
        assert status == 200 and stage["recording"]["recording"], stage
        assert stage["recording"]["file"].startswith("stage-") and FILE.match(stage["recording"]["file"])

        status, created, _ = await api.call("POST", "/api/sessions", {"record": True})
        assert status == 201, created
        a = created["id"]
        rec = created["recording"]
        assert rec["recording"] and rec["file"].startswith(f"{a}-") and FILE.match(rec["file"]), rec
        b = await api.create()
        status, body, _ = await api.call("GET", f"/api/sessions/{b}/status")
        assert status == 200 and body["recording"] == {"recording": False, "file": None}
        status, body, _ = await api.call("GET", "/api/record")  # the default session's, as mute and freeze
        assert status == 200 and body == {"recording": False, "file": None}

        # Two record (the limit): a third is refused, by creation or over the running session's route.
        status, body, _ = await api.call("POST", f"/api/sessions/{b}/record", {"recording": True})
        assert status == 409 and "sessions.max_recordings = 2" in body["error"] and body["fix"], body
        assert "\n" not in body["error"]
        status, body, _ = await api.call("POST", "/api/sessions", {"record": True})
        assert status == 409 and "sessions.max_recordings" in body["error"], body
        assert len(daemon.sessions) == 4

        # Nothing of a request says where or how a file is written.
        for bad, word in (({"record": "/tmp/evil.mp4"}, "record"), ({"record": "yes"}, "record"),
                          ({"record": 1}, "record"), ({"record_dir": "/tmp"}, "record_dir"),
                          ({"record": True, "file": "../x.mp4"}, "file")):
            status, body, _ = await api.call("POST", "/api/sessions", bad)
            assert status == 400 and word in body["error"] and body["fix"], (bad, body)
        for bad in ({"recording": "/tmp/evil.mp4"}, {"recording": True, "path": "/tmp/evil.mp4"},
                    {"recording": False, "file": "x.mp4"}, {}):
            status, body, _ = await api.call("POST", f"/api/sessions/{b}/record", bad)
            assert status == 400 and body["fix"], (bad, body)
        status, body, _ = await api.call("POST", f"/api/sessions/{a}/record", None, data=b'{"recording": false}',
                                         headers={"Content-Type": "text/plain"})
        assert status == 403 and "application/json" in body["error"]
        status, _, _ = await api.call("POST", f"/api/sessions/{a}/record", {"recording": False},
                                      headers={"Origin": "http://evil.example"})
        assert status == 403
        assert len(daemon.sessions) == 4 and not Path("/tmp/evil.mp4").exists()

        # Ending a finalises its file; b keeps rendering.
        await until_recorded(api, f"/api/sessions/{a}", 30)
        before = rendered(daemon, b)
        status, body, _ = await api.call("DELETE", f"/api/sessions/{a}")
        assert status == 200 and body["ended"] == a, body
        ended = body["recording"]
        assert not ended["recording"] and ended["finished"] and ended["error"] is None and ended["frames"] >= 30
        codec, width, height, frames = video_of(folder / ended["file"])
        assert (codec, width, height) == ("h264", SMALL["width"], SMALL["height"])
        assert frames >= 30 and abs(frames - ended["frames"]) <= 1, (frames, ended)
        await wait_until(lambda: rendered(daemon, b) > before + 25, 20, "session b renders on after a ended")

        # The place a took is free: b records over HTTP, stops, and has a playable file of its own.
        status, body, _ = await api.call("POST", f"/api/sessions/{b}/record", {"recording": True})
        assert status == 200 and body["recording"] and body["file"].startswith(f"{b}-"), body
        status, again, _ = await api.call("POST", f"/api/sessions/{b}/record", {"recording": True})
        assert status == 200 and again["file"] == body["file"]  # already recording: the same file
        await until_recorded(api, f"/api/sessions/{b}", 10)
        status, stopped, _ = await api.call("POST", f"/api/sessions/{b}/record", {"recording": False})
        assert status == 200 and not stopped["recording"] and stopped["finished"], stopped
        assert video_of(folder / stopped["file"])[3] >= 10
        status, listed, _ = await api.call("GET", "/api/sessions")
        by_id = {s["id"]: s["recording"] for s in listed["sessions"]}
        assert by_id[b]["file"] == stopped["file"] and not by_id[b]["recording"] and by_id["stage"]["recording"]

        assert {p.name for p in folder.iterdir()} == {stage["recording"]["file"], ended["file"], stopped["file"]}
        status, text, _ = await api.call("GET", "/metrics")
        assert status == 200 and 'avatar_bridge_session_recording{session="stage"} 1' in text
        assert f'avatar_bridge_session_recording{{session="{b}"}} 0' in text


def test_the_folder_is_the_users_by_default_and_a_file_the_daemon_cannot_use_is_one_line(tmp_path: Path) -> None:
    config = load_config(None, environ={})
    recorders = Recorders(config, SessionRegistry(config))
    assert recorders.folder == default_record_dir() == Path(os.environ["XDG_DATA_HOME"]) / "avatar-bridge" / "recordings"
    assert recorders.limit == 4
    assert file_name("stage", 0.0) == "stage-19700101-000000Z.mp4"

    # A name taken (a file, or a link to one elsewhere) is never written over: the recording gets a number.
    config = load_config(None, overrides={"sessions": {"record_dir": str(tmp_path / "takes")}}, environ={})
    recorders = Recorders(config, SessionRegistry(config))
    (tmp_path / "takes").mkdir()
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me")
    now = int(time.time())
    for second in range(now, now + 5):
        taken = tmp_path / "takes" / file_name("stage", second)
        if second % 2:
            taken.symlink_to(elsewhere)
        else:
            taken.write_text("an earlier take")
    sink = recorders.new_sink("stage")
    assert sink.path.parent == tmp_path / "takes" and sink.path.name.endswith("Z-2.mp4") and not sink.path.exists()
    assert elsewhere.read_text() == "keep me"

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    config = load_config(None, overrides={"sessions": {"record_dir": str(blocked)}}, environ={})
    with pytest.raises(UserError) as refused:
        Recorders(config, SessionRegistry(config)).new_sink("stage")
    assert "sessions.record_dir" in str(refused.value) and "\n" not in str(refused.value)


def test_the_config_bounds_recordings_and_reads_the_folder_next_to_it(tmp_path: Path) -> None:
    conf = tmp_path / "avatar.toml"
    conf.write_text('[sessions]\nrecord_dir = "takes"\nmax_recordings = 1\n'
                    '[[sessions.fixed]]\nname = "stage"\nrecord = true\n')
    config = load_config(conf, environ={})
    assert config.sessions.record_dir == tmp_path / "takes"
    conf.write_text('[sessions]\nmax_recordings = 1\n[[sessions.fixed]]\nname = "a"\nrecord = true\n'
                    '[[sessions.fixed]]\nname = "b"\nrecord = true\n')
    with pytest.raises(ConfigError, match="max_recordings"):
        load_config(conf, environ={})


def _call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _until(what: str, check: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.2)
    return found


def test_a_full_disk_stops_one_sessions_recording_and_the_session_renders_on(tmp_path: Path) -> None:
    """A daemon whose files may not grow past 30 kB (what a full disk looks like to the recorder): a session's
    recording stops with one line naming its file (not the folder), the file plays, the session renders on, and
    its place among the recordings is free again."""
    conf = tmp_path / "avatar.toml"
    conf.write_text('[audio]\nloop = true\n[osc]\nenabled = false\n[vmc]\nenabled = false\n[midi]\nenabled = false\n'
                    '[sessions]\nmax = 2\nmax_recordings = 1\nrecord_dir = "takes"\n')
    proc, url = started_daemon(cli("demo", "--config", str(conf), "--size", "64x64", "--port", "0"), tmp_path, env(),
                               preexec=lambda: limit_file_size(30_000))
    try:
        status, created = _call(url + "/api/sessions", "POST", {"record": True})
        assert status == 201, created
        api = f"{url}/api/sessions/{created['id']}"
        failed = _until("the recording hit the size limit", lambda: (r := _call(api + "/record")[1])["error"] and r)
        assert not failed["recording"] and failed["finished"] and failed["file"] == created["recording"]["file"]
        assert "size limit" in failed["error"] and str(tmp_path) not in failed["error"] and "\n" not in failed["error"]
        assert read_recording(tmp_path / "takes" / failed["file"]).frames >= 10
        frames = _call(api + "/status")[1]["frames"]
        _until("the session renders on", lambda: _call(api + "/status")[1]["frames"] > frames + 25)
        status, again = _call(api + "/record", "POST", {"recording": True})
        assert status == 200 and again["recording"] and again["file"] != failed["file"], again
    finally:
        stopped_daemon(proc, signal.SIGINT)
