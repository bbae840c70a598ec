"""Sessions of one daemon over the real loopback: created, driven and ended through the HTTP API, OSC over UDP
and a WebRTC talker, and kept apart: a control or a voice sent to one never reaches another, and ending one
leaves the others rendering. Every session renders the flat test avatar (tests.avatars), so what is tested is
the sessions' plumbing, not this machine's speed."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from pythonosc.udp_client import SimpleUDPClient

from tests.avatars import FlatAvatar, as_demo_avatar
from tests.http.conftest import running_daemon
from tests.output.conftest import wait_until, watch

SMALL = {"width": 64, "height": 64, "fps": 25}


@contextlib.asynccontextmanager
async def sessions_daemon(**overrides: Any) -> AsyncIterator[Any]:
    """The test daemon with every session it makes (not only the default one) on the flat avatar."""
    with as_demo_avatar():
        async with running_daemon(**{"video": SMALL, **overrides}) as daemon:
            yield daemon


class Api:
    def __init__(self, daemon: Any, http: aiohttp.ClientSession) -> None:
        self.url = f"http://127.0.0.1:{daemon.http_port}"
        self.http = http

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.url + path, json=body, **kw) as r:
            data = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, data, r.headers

    async def create(self, **spec: Any) -> str:
        status, body, _ = await self.call("POST", "/api/sessions", spec)
        assert status == 201, body
        return str(body["id"])

    async def manual(self, prefix: str) -> dict[str, Any]:
        status, body, _ = await self.call("GET", f"{prefix}/state")
        assert status == 200, body
        return body["manual"]  # type: ignore[no-any-return]

    async def until_manual(self, prefix: str, expected: dict[str, float]) -> None:
        """Until the session's mixer shows `expected` (it applies controls on its next tick)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while (seen := await self.manual(prefix)) != expected:
            assert loop.time() < end, f"{prefix} shows {seen}, not {expected}"
            await asyncio.sleep(0.05)


def rendered(daemon: Any, name: str) -> int:
    session = daemon.sessions.get(name)
    assert session is not None, f"no session {name}"
    return int(session.stats.snapshot()["stages"].get("render", {}).get("count", 0))


class Tone(MediaStreamTrack):
    """A talker's microphone: a 440 Hz tone at half scale, 20 ms frames at 48 kHz, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.sent / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (self.sent + np.arange(960)) / 48000
        samples = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.sent, fractions.Fraction(1, 48000)
        self.sent += 960
        return frame


async def talk(url: str) -> RTCPeerConnection:
    """Send the tone to `url` (a WHEP endpoint) as a talk-in peer: audio out, nothing in."""
    pc = RTCPeerConnection()
    pc.addTransceiver(Tone(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http, http.post(
            url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r:
        assert r.status == 201, await r.text()
        answer = await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc


async def peak_of(session: Any, seconds: float) -> float:
    """The loudest input sample `session` takes in over `seconds`."""
    sub = session.audio_in.subscribe(maxsize=400)
    loop = asyncio.get_running_loop()
    peak, end = 0.0, loop.time() + seconds
    try:
        while loop.time() < end:
            chunk = await loop.run_in_executor(None, sub.get, 0.2)
            if chunk is not None:
                peak = max(peak, float(np.abs(chunk.samples).max()))
    finally:
        sub.close()
    return peak


async def test_sessions_are_created_driven_kept_apart_and_ended() -> None:
    async with sessions_daemon(osc={"enabled": True, "port": 0}, sessions={"max": 3}) as daemon, \
            aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        a = await api.create(audio="webrtc")
        b = await api.create(audio="webrtc", idle=False)
        assert len({a, b, "default"}) == 3 and len(a) == 24
        status, listing, _ = await api.call("GET", "/api/sessions")
        assert status == 200 and {s["id"] for s in listing["sessions"]} == {"default", a, b}
        assert listing["capacity"] == 3

        # Full: a fourth session is refused with when to come back, not squeezed in.
        status, body, headers = await api.call("POST", "/api/sessions", {})
        assert status == 503 and int(headers["Retry-After"]) == 30 and "3 sessions" in body["error"], body

        # OSC over UDP: /avatar/<a>/… reaches session a only; plain /avatar/… the default session only.
        osc_port = daemon.surface("osc").bound[1]
        client = SimpleUDPClient("127.0.0.1", osc_port)
        client.send_message(f"/avatar/{a}/blend/jawOpen", 0.7)
        client.send_message("/avatar/blend/browInnerUp", 0.4)
        client.send_message("/avatar/nosuchsession/blend/mouthSmileLeft", 1.0)
        await wait_until(lambda: daemon.sessions.get(a).mixer.state()["manual"].get("blend/jawOpen") == 0.7,
                         10, "session a took its OSC control")
        await wait_until(lambda: daemon.session.mixer.state()["manual"].get("blend/browInnerUp") == 0.4,
                         10, "the default session took the plain OSC control")
        assert await api.manual(f"/api/sessions/{a}") == {"blend/jawOpen": 0.7}
        assert await api.manual(f"/api/sessions/{b}") == {}
        assert await api.manual("/api") == {"blend/browInnerUp": 0.4}

        # HTTP controls by session.
        status, body, _ = await api.call("POST", f"/api/sessions/{b}/control",
                                         {"target": "blend/eyeBlinkLeft", "values": [1]})
        assert status == 200, body
        await api.until_manual(f"/api/sessions/{b}", {"blend/eyeBlinkLeft": 1.0})
        assert "blend/eyeBlinkLeft" not in await api.manual(f"/api/sessions/{a}")
        assert "blend/eyeBlinkLeft" not in await api.manual("/api")

        # A talker's voice over WebRTC goes to the session it called, not to its neighbour.
        pc = await talk(f"{api.url}/sessions/{a}/whep")
        try:
            assert await peak_of(daemon.sessions.get(a), 8.0) > 0.05, "the talker never reached session a"
            assert await peak_of(daemon.sessions.get(b), 1.5) < 1e-3, "session b heard session a's talker"
        finally:
            await pc.close()

        # A viewer of session b, status per session with its frame counters.
        viewer = await watch(f"{api.url}/sessions/{b}", mode="whep")
        try:
            assert viewer.location.startswith(f"/sessions/{b}/whep/")
            await wait_until(lambda: daemon.sessions.get(b).viewer_count == 1, 10, "session b has its viewer")
            assert daemon.session.viewer_count == 0 and daemon.sessions.get(a).viewer_count == 0
            status, body, _ = await api.call("GET", f"/api/sessions/{b}/status")
            assert status == 200 and body["session"] == b and body["viewers"] == 1 and body["frames"] > 0
            # The viewer's resource is its session's: the default session's path does not end it.
            status, _, _ = await api.call("DELETE", f"/whep/{viewer.location.rsplit('/', 1)[1]}")
            assert status == 404
        finally:
            await viewer.pc.close()

        # Ending a leaves the default session and b rendering.
        status, body, _ = await api.call("DELETE", f"/api/sessions/{a}")
        assert status == 200 and body["ended"] == a and body["recording"] == {"recording": False, "file": None}
        assert a not in daemon.sessions
        before = {name: rendered(daemon, name) for name in ("default", b)}
        await asyncio.sleep(1.5)
        for name, count in before.items():
            assert rendered(daemon, name) > count + 5, f"session {name} stopped rendering after another ended"
        status, _, _ = await api.call("GET", f"/api/sessions/{a}/state")
        assert status == 404
        client.send_message(f"/avatar/{a}/blend/jawOpen", 0.2)  # an ended session's name is unknown again
        status, _, _ = await api.call("DELETE", f"/api/sessions/{a}")
        assert status == 404
        status, body, _ = await api.call("DELETE", "/api/sessions/default")
        assert status == 409, body

        # /metrics: per session and in total.
        status, text, _ = await api.call("GET", "/metrics")
        assert status == 200
        assert f'avatar_bridge_session_frames_total{{session="{b}"}}' in text
        assert 'avatar_bridge_session_viewers{session="default"} 0' in text
        assert "avatar_bridge_sessions 2" in text and "avatar_bridge_sessions_capacity 3" in text
        assert "avatar_bridge_sessions_refused_total 1" in text


async def test_the_request_policy_and_the_schema_guard_the_session_routes() -> None:
    async with sessions_daemon(sessions={"max": 2}, http={"allowed_origins": ["https://player.example"]}) as daemon, \
            aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        evil = {"Origin": "http://evil.example"}
        status, body, _ = await api.call("POST", "/api/sessions", None, data=b"{}",
                                         headers={"Content-Type": "text/plain"})
        assert status == 403 and "application/json" in body["error"]
        status, _, _ = await api.call("POST", "/api/sessions", {}, headers=evil)
        assert status == 403
        status, _, _ = await api.call("GET", "/api/sessions", headers={"Host": "evil.example"})
        assert status == 403
        for bad, word in (({"width": 3}, "width"), ({"name": "mine"}, "name"), ({"avatar": "../x"}, "avatar"),
                          ({"colour": 1}, "colour"), ({"fps": 24}, "fps")):
            status, body, _ = await api.call("POST", "/api/sessions", bad)
            assert status == 400 and word in body["error"] and body["fix"], (bad, body)
        assert len(daemon.sessions) == 1
        sid = await api.create()
        for method, path in (("DELETE", f"/api/sessions/{sid}"), ("POST", f"/api/sessions/{sid}/control"),
                             ("POST", f"/sessions/{sid}/whep")):
            status, _, _ = await api.call(method, path, None, headers=evil)
            assert status == 403, (method, path)
        status, _, _ = await api.call("POST", f"/sessions/{sid}/whep", {"sdp": "v=0"})  # JSON where SDP belongs
        assert status == 403
        # CORS: a listed player may use a session's WHEP and viewer API, never create or end sessions.
        player = {"Origin": "https://player.example", "Access-Control-Request-Method": "POST"}
        for path in (f"/sessions/{sid}/whep", f"/api/sessions/{sid}/webrtc/offer"):
            async with http.options(api.url + path, headers=player) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "https://player.example", path
        for path in ("/api/sessions", f"/api/sessions/{sid}"):
            async with http.options(api.url + path, headers=player) as r:
                assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers, path
        for path in ("/api/sessions/0123456789abcdef01234567/state", "/api/sessions/BLEND/state",
                     "/api/sessions/" + "a" * 300 + "/state"):
            status, _, _ = await api.call("GET", path)
            assert status == 404, path
        assert sid in daemon.sessions


async def test_fixed_sessions_from_the_config_answer_osc_by_name() -> None:
    import socket

    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    async with sessions_daemon(osc={"enabled": True, "port": 0},
                               sessions={"max": 3, "fixed": [{"name": "stage", "audio": "silence"}]}) as daemon, \
            aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        stage = daemon.sessions.get("stage")
        assert stage is not None and stage.fixed and stage.running
        status, body, _ = await api.call("DELETE", "/api/sessions/stage")
        assert status == 409, body

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()

        def send(address: str, *args: float) -> None:
            builder = OscMessageBuilder(address)
            for arg in args:
                builder.add_arg(arg)
            sock.sendto(builder.build().dgram, ("127.0.0.1", daemon.surface("osc").bound[1]))

        async def ask(address: str) -> OscMessage:
            send(address)
            async with asyncio.timeout(10):
                return OscMessage(await loop.sock_recv(sock, 65536))

        send("/avatar/stage/blend/jawOpen", 0.5)
        await wait_until(lambda: stage.mixer.state()["manual"].get("blend/jawOpen") == 0.5, 10, "stage took it")
        reply = await ask("/avatar/stage/get/blend/jawOpen")
        assert reply.address == "/avatar/stage/value/blend/jawOpen" and reply.params == [0.5]
        reply = await ask("/avatar/get/blend/jawOpen")
        assert reply.address == "/avatar/value/blend/jawOpen" and reply.params == [0.0]
        reply = await ask("/avatar/stage/ping")
        assert reply.address == "/avatar/stage/pong"
        sock.close()


async def test_an_automatic_capacity_is_measured_from_the_default_session() -> None:
    from bridge.runtime.sessions import MIN_SAMPLES, measured_load

    async with sessions_daemon() as daemon, aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        if rendered(daemon, "default") < MIN_SAMPLES - 5:  # well before the measurement: refused for now
            status, body, headers = await api.call("POST", "/api/sessions", {})
            assert status == 503 and "measuring" in body["error"] and int(headers["Retry-After"]) <= 5, body
        await wait_until(lambda: daemon.sessions.capacity() is not None, 20, "the capacity was measured")
        load = measured_load(daemon.session)
        assert load is not None and load.render_s > 0
        status, body, _ = await api.call("GET", "/api/sessions")
        assert isinstance(body["capacity"], int) and body["capacity"] >= 1
        await api.create()


class StallingAvatar(FlatAvatar):
    """The flat avatar on a GPU that stalls once: from its 40th render on, three renders take 0.2 s each."""

    render_seconds = 0.2
    slow_after = 40
    slow_for = 3


async def test_a_measured_capacity_takes_no_session_while_frames_are_late() -> None:
    from bridge.runtime.sessions import LATE_WINDOW_S

    with as_demo_avatar(f"{__name__}:StallingAvatar"):  # (the registry's demo avatar as it is: this one)
        async with running_daemon(demo_head=True, video=SMALL) as daemon, aiohttp.ClientSession() as http:
            api = Api(daemon, http)
            await wait_until(lambda: daemon.sessions.late_sessions(), 20, "the stall made frames late")
            cap = daemon.sessions.capacity()
            assert cap is not None and cap > 1  # by the measured cost there is room
            status, body, headers = await api.call("POST", "/api/sessions", {})
            assert status == 503 and "'default' missed frame deadlines" in body["error"], body
            assert int(headers["Retry-After"]) == 30 and daemon.sessions.refused == 1
            assert LATE_WINDOW_S >= 5  # a short stall keeps sessions out for seconds, not for good:
            await wait_until(lambda: not daemon.sessions.late_sessions(window_s=1.0), 10, "the stall passed")
            assert daemon.sessions.late_sessions()  # (still within the default window)

