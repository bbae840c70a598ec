"""The HTTP request policy over real HTTP: Host names that are not this daemon's (DNS rebinding), bodies of
the kinds a web page can send without asking (text/plain, forms, multipart, none), foreign and opaque
origins, CORS only for allowed origins on WHEP and the viewer API, and clients that never finish their
request headers (slowloris)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.security.conftest import Origins
from tests.security.daemon import Answer, DaemonProcess
from tests.security.pages import ATTACKS

SIMPLE_TYPES = (
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    None,  # no Content-Type at all
    "application/jsonp",
    "application/json-patch+json",
)
REBOUND_HOSTS = ("attacker.example", "attacker.example:{port}", "127.0.0.1.nip.io:{port}", "localtest.me:{port}",
                 "127.0.0.1.attacker.example:{port}", "0x7f000001.example:{port}")


def assert_refused(answer: Answer, status: int = 403) -> dict[str, str]:
    assert answer.status == status, answer
    body = answer.json
    assert body["error"] and body["fix"], body
    return body  # type: ignore[no-any-return]


def test_rebinding_hosts_are_refused_for_reads_and_writes(daemon: DaemonProcess) -> None:
    frames = daemon.frames()
    before = daemon.state()["manual"]
    for template in REBOUND_HOSTS:
        host = template.format(port=daemon.port)
        for path in ("/api/state", "/api/status", "/metrics", "/panel/", "/api/webrtc/viewers"):
            body = assert_refused(daemon.request("GET", path, headers={"Host": host}))
            assert "Host" in body["error"]
        assert_refused(daemon.post_json("/api/control", {"target": "blend/mouthPucker", "values": [1]},
                                        headers={"Host": host}))
    assert daemon.state()["manual"] == before
    # The names this daemon answers to: loopback names and addresses with its port.
    for host in (f"127.0.0.1:{daemon.port}", f"localhost:{daemon.port}", f"[::1]:{daemon.port}",
                 f"127.0.0.2:{daemon.port}", f"LOCALHOST:{daemon.port}"):
        assert daemon.request("GET", "/api/state", headers={"Host": host}).status == 200, host
    # Another port is another server (an ssh tunnel or a proxy goes in http.allowed_hosts).
    assert_refused(daemon.request("GET", "/api/state", headers={"Host": f"127.0.0.1:{daemon.port + 1}"}))
    # Supervisors' health checks are never refused.
    assert daemon.request("GET", "/health", headers={"Host": "attacker.example"}).status == 200
    daemon.assert_rendering(frames)


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
def test_bodies_a_page_can_send_without_asking_are_refused(daemon: DaemonProcess, content_type: str | None) -> None:
    frames = daemon.frames()
    before = daemon.state()["manual"]
    status = daemon.status()
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path, payload in [*ATTACKS.items(), ("/api/webrtc/offer", {"sdp": "v=0\r\n", "type": "offer"})]:
        body = assert_refused(daemon.request("POST", path, json.dumps(payload), headers))
        assert "application/json" in body["fix"], body
    assert_refused(daemon.request("POST", "/whep", "v=0\r\n", headers))
    assert daemon.state()["manual"] == before
    after = daemon.status()
    assert (after["frozen"], after["muted"], after["audio_source"]) == (
        status["frozen"], status["muted"], status["audio_source"])
    daemon.assert_rendering(frames)


def test_foreign_and_opaque_origins_are_refused_even_with_json(daemon: DaemonProcess, origins: Origins) -> None:
    frames = daemon.frames()
    refused = daemon.counter("policy/refused_origin")
    for origin in ("http://attacker.example", origins.attacker_origin, "null", f"http://127.0.0.1.nip.io:{daemon.port}",
                   f"https://127.0.0.1:{daemon.port}", f"http://127.0.0.1:{daemon.port + 1}", "file://"):
        body = assert_refused(daemon.post_json("/api/freeze", {"frozen": True}, headers={"Origin": origin}))
        assert "origin" in body["error"].lower()
        assert_refused(daemon.request("DELETE", "/whep/anything", headers={"Origin": origin}))
    assert daemon.status()["frozen"] is False
    assert daemon.counter("policy/refused_origin") >= refused + 14
    # The daemon's own pages (any loopback alias) and origins the user allowed may change things.
    for origin in (f"http://127.0.0.1:{daemon.port}", f"http://localhost:{daemon.port}", origins.player_origin):
        answer = daemon.post_json("/api/freeze", {"frozen": False}, headers={"Origin": origin})
        assert answer.status == 200, (origin, answer)
    daemon.assert_rendering(frames)


def test_cors_only_for_allowed_origins_on_whep_and_the_viewer_api(daemon: DaemonProcess, origins: Origins) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    for path in ("/whep", "/api/webrtc/offer", "/api/webrtc/viewers", "/whep/some-session"):
        ok = daemon.request("OPTIONS", path, headers={"Origin": origins.player_origin, **preflight})
        assert ok.status == 204, (path, ok)
        assert ok.headers["access-control-allow-origin"] == origins.player_origin
        assert "POST" in ok.headers["access-control-allow-methods"]
        allowed_headers = ok.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers
        assert "origin" in ok.headers.get("vary", "").lower()
        refused = daemon.request("OPTIONS", path, headers={"Origin": origins.attacker_origin, **preflight})
        assert refused.status == 403 and "access-control-allow-origin" not in refused.headers
    # The control API is for the daemon's own pages only, whoever asks.
    control = daemon.request("OPTIONS", "/api/control", headers={"Origin": origins.player_origin, **preflight})
    assert control.status == 403 and "access-control-allow-origin" not in control.headers
    # Plain WHEP clients ask what to post without an Origin.
    plain = daemon.request("OPTIONS", "/whep")
    assert plain.status == 204 and "application/sdp" in plain.headers["accept-post"]
    # Answers to an allowed origin carry CORS headers and expose Location and ETag; others carry none.
    listing = daemon.request("GET", "/api/webrtc/viewers", headers={"Origin": origins.player_origin})
    assert listing.headers["access-control-allow-origin"] == origins.player_origin
    exposed = listing.headers["access-control-expose-headers"].lower()
    assert "location" in exposed and "etag" in exposed
    stranger = daemon.request("GET", "/api/webrtc/viewers", headers={"Origin": origins.attacker_origin})
    assert "access-control-allow-origin" not in stranger.headers
    state = daemon.request("GET", "/api/state", headers={"Origin": origins.player_origin})
    assert "access-control-allow-origin" not in state.headers


IDLE_TIMEOUT_S = 2.0  # http.idle_timeout_s of the test daemon (tests/security/daemon.py)
TRICKLE_S = 60.0  # how long a slow client goes on sending header lines unless the server closes it


def _slow_client(port: int, closed: dict[int, float], index: int, started: threading.Event) -> None:
    """Sends a request's headers one line every 0.5 s, never finishing them, for up to TRICKLE_S; records in
    `closed[index]` how many seconds after connecting the server closed the connection (end of stream or a
    reset). A client that trickles to the end without being closed records nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        opened = time.monotonic()
        sock.sendall(f"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        started.set()
        sock.settimeout(0.5)
        i = 0
        while time.monotonic() - opened < TRICKLE_S:
            try:
                sock.sendall(f"X-Slow-{i}: a\r\n".encode())
                i += 1
                if sock.recv(4096) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:  # reset or broken pipe: closed by the server
                break
        else:
            return
        closed[index] = time.monotonic() - opened


def test_requests_that_never_finish_their_headers_are_closed(daemon: DaemonProcess) -> None:
    assert daemon.config["http"]["idle_timeout_s"] == IDLE_TIMEOUT_S
    frames = daemon.frames()
    closed: dict[int, float] = {}
    threads = []
    for index in range(20):
        started = threading.Event()
        t = threading.Thread(target=_slow_client, args=(daemon.port, closed, index, started), daemon=True)
        t.start()
        started.wait(10)
        threads.append(t)
    # While they trickle, the daemon answers everyone else.
    assert daemon.request("GET", "/health").status == 200
    for t in threads:
        t.join(TRICKLE_S + 30)
    held = sorted(set(range(20)) - set(closed))
    assert not held, f"slow clients {held} were held open for {TRICKLE_S:.0f} s instead of closed"
    # Closed by the idle timeout, not at once and not after it lapsed many times over (the bound is loose:
    # the clients start one after another on a loaded machine).
    early = {i: round(t, 2) for i, t in closed.items() if t < IDLE_TIMEOUT_S * 0.9}
    late = {i: round(t, 2) for i, t in closed.items() if t > IDLE_TIMEOUT_S * 10}
    assert not early and not late, f"closed too early {early} or too late {late} (timeout {IDLE_TIMEOUT_S} s)"
    daemon.assert_rendering(frames)


def test_oversized_bodies_are_refused(daemon: DaemonProcess) -> None:
    frames = daemon.frames()
    big = json.dumps({"target": "blend/jawOpen", "values": [0.5], "pad": "x" * (2 << 20)})
    body = assert_refused(daemon.request("POST", "/api/control", big, {"Content-Type": "application/json"}), 400)
    assert "bytes" in body["error"], body  # refused for its size, not for what it says
    daemon.assert_rendering(frames)


def test_refusals_do_not_echo_the_request(daemon: DaemonProcess) -> None:
    marker = "echo-marker-7f3a9c"
    for answer in (daemon.request("GET", "/api/state", headers={"Host": f"{marker}.example"}),
                   daemon.request("POST", f"/api/control?{marker}", marker, {"Content-Type": "text/plain"}),
                   daemon.request("POST", "/api/control", marker, {"Content-Type": "application/json",
                                                                    "Origin": f"http://{marker}.example"})):
        assert answer.headers["content-type"].startswith("application/json"), answer
        assert marker not in answer.body.decode(), answer
