"""Request bodies in pieces: every POST (and PATCH) route of the daemon, its body sent byte by byte over a raw
socket with pauses between, answers as it does when the body comes in one piece. Real clients on a LAN send a
3-5 KB WebRTC offer in several TCP segments; a reader that keeps only what has arrived cuts the JSON short or
drops the offer's audio section."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

from tests.security.daemon import REPO, Answer, DaemonProcess
from tests.security.test_webrtc_sessions import make_offer

JSON = {"Content-Type": "application/json"}
SDP = {"Content-Type": "application/sdp"}
ROUTE = re.compile(r"add_(?:post|patch)\(\s*\"([^\"]+)\"|add_route\(\s*app,\s*\"(?:POST|PATCH)\",\s*\"([^\"]+)\"")

# One body per route, each one the route takes (or refuses) the same way however often it is sent.
BODIES: dict[str, dict[str, Any]] = {
    "/api/control": {"target": "blend/jawOpen", "values": [0.25]},
    "/api/audio/source": {"source": "file"},
    "/api/audio/output": {"device": None},
    "/api/mute": {"muted": False},
    "/api/freeze": {"frozen": False},
    "/api/idle": {"blink": False, "gaze_amount": 0.5},
    "/api/presets/apply": {"name": "smile", "kind": "preset", "value": 0.5, "fade": 0.1},
    "/api/presets/capture": {"name": "in_pieces"},
    "/api/presets/reload": {},
    "/api/midi/learn/start": {"target": "blend/browInnerUp"},
    "/api/midi/learn/assign": {"target": "blend/browInnerUp"},
    "/api/midi/learn/stop": {},
    "/api/passthrough": {"delay_ms": 120},
    "/api/scene/background": {"name": "default"},
    "/api/record": {"recording": False},  # not recording: the same answer however often
    "/api/sessions": {"name": "in-pieces"},  # refused (a created session's id is random), before any model loads
    # The same handlers under the default session's own paths (bridge.http.scope).
    "/api/sessions/default/control": {"target": "blend/jawOpen", "values": [0.25]},
    "/api/sessions/default/mute": {"muted": False},
}
SDP_ROUTES = ("/whep", "/api/webrtc/offer", "/sessions/default/whep")
SCOPED = {"/api/sessions/default/control", "/api/sessions/default/mute", "/sessions/default/whep"}


def routes_with_bodies() -> set[str]:
    """Every POST and PATCH route the HTTP floor adds (read from its source, so a new one must join BODIES)."""
    found = set()
    for source in (REPO / "bridge" / "http").glob("*.py"):
        found.update(plain or scoped for plain, scoped in ROUTE.findall(Path(source).read_text()))
    return found


def send(daemon: DaemonProcess, method: str, path: str, headers: dict[str, str], body: bytes,
         pauses: set[int] | None = None, chunked: bool = False) -> Answer:
    """One request over a raw socket. With `pauses`, the body goes byte by byte (one segment each: no Nagle),
    pausing 0.15 s before each byte offset in `pauses` and briefly every 128 bytes; `chunked` sends it as
    one-byte chunks of a chunked transfer encoding instead of with a Content-Length."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n{head}{framing}\r\n"
                     "Connection: close\r\n\r\n".encode())
        if pauses is None and not chunked:
            sock.sendall(body)
        else:
            for i in range(len(body)):
                if i in (pauses or ()):
                    time.sleep(0.15)
                elif i % 128 == 0:
                    time.sleep(0.01)
                piece = body[i:i + 1]
                sock.sendall(b"1\r\n" + piece + b"\r\n" if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        sock.close()


def json_pauses(body: bytes) -> set[int]:
    return {1, 10, len(body) // 2, len(body) - 1} if body else set()


def media(sdp: str) -> list[str]:
    """The kinds of the m= sections of an SDP, in order."""
    return re.findall(r"^m=(\w+)", sdp, flags=re.M)


def forget(daemon: DaemonProcess, answer: Answer, location: str | None) -> None:
    if answer.status in (200, 201) and location:
        daemon.request("DELETE", location)


def test_every_body_route_is_covered() -> None:
    # PATCH /whep/{id} (trickle ICE) is refused with 405 before any of its body is read: nothing to cut short.
    assert routes_with_bodies() == (set(BODIES) | set(SDP_ROUTES) | {"/whep/{id}"}) - SCOPED


def test_json_bodies_byte_by_byte_answer_as_whole(daemon: DaemonProcess) -> None:
    try:
        for path, payload in BODIES.items():
            body = json.dumps(payload).encode()
            whole = send(daemon, "POST", path, JSON, body)
            pieces = send(daemon, "POST", path, JSON, body, pauses=json_pauses(body))
            chunks = send(daemon, "POST", path, JSON, body, pauses={10}, chunked=True)
            assert whole.status < 500 and whole.status != 408, (path, whole)
            assert (pieces.status, pieces.json) == (whole.status, whole.json), (path, whole, pieces)
            assert (chunks.status, chunks.json) == (whole.status, whole.json), (path, whole, chunks)
        # The issue's own case: 10 bytes, a pause, the rest.
        body = json.dumps(BODIES["/api/control"]).encode()
        assert send(daemon, "POST", "/api/control", JSON, body, pauses={10}).status == 200
    finally:
        (daemon.tmp / "presets" / "captured.toml").unlink(missing_ok=True)
    assert daemon.alive()


def test_offers_byte_by_byte_keep_their_audio(daemon: DaemonProcess) -> None:
    """A WHEP offer and a JSON-wrapped offer, split before their m=audio sections, get answers with audio."""
    offer = asyncio.run(make_offer())
    assert media(offer) == ["video", "audio"]
    wrapped = json.dumps({"sdp": offer, "type": "offer"}).encode()
    for path, headers, body in (("/whep", SDP, offer.encode()), ("/sessions/default/whep", SDP, offer.encode()),
                                ("/api/webrtc/offer", JSON, wrapped)):
        split = body.index(b"m=audio")
        whep = path.endswith("/whep")
        for pauses, chunked in (({1, 10, split}, False), ({split}, True), (None, False)):
            answer = send(daemon, "POST", path, headers, body, pauses=pauses, chunked=chunked)
            assert answer.status in (200, 201), (path, pauses, chunked, answer)
            text = answer.body.decode() if whep else answer.json["sdp"]
            location = answer.headers.get("location") if whep else answer.json["location"]
            forget(daemon, answer, location)
            assert media(text) == ["video", "audio"], (path, pauses, chunked, text)
    assert daemon.alive()


def test_a_body_that_stops_coming_is_refused_in_time(daemon: DaemonProcess) -> None:
    """Half a body and then nothing: a 408 after the read deadline (10 s), never a hang or a cut-short parse."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=40)
    try:
        body = json.dumps(BODIES["/api/control"]).encode()
        sock.sendall(f"POST /api/control HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body[:10])
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        answer = Answer(resp.status, {}, resp.read())
    finally:
        sock.close()
    assert answer.status == 408, answer
    assert "10 bytes came" in answer.json["error"], answer
