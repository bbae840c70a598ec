"""Floods and idle connections on the control ports: a flooding OSC or VMC sender uses up only its own packet
budget (a second sender is still heard), and idle TCP connections to the OSC port are capped per source and
closed after a timeout."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from tests.security.daemon import REPO, DaemonProcess, wait_for


def start_flood(port: int, count: int = 10_000_000, sockets: int = 1, blast: bool = False) -> subprocess.Popen[bytes]:
    """The hostile sender of the OSC fuzz tests, in its own process, from `sockets` UDP ports (until killed);
    `blast`: as fast as it can, without the pauses of a fast network."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.control.osc_fuzz", str(port), str(count), "5", str(sockets),
                             "blast" if blast else "pause"], env=env, stdout=subprocess.DEVNULL)


def sender_entry(daemon: DaemonProcess, surface: str, port: int) -> dict[str, Any]:
    senders = daemon.state()["surfaces"][surface]["senders"]
    return next((s for s in senders if s["address"] == f"127.0.0.1:{port}"), {"packets": 0, "rate_limited": 0})


def message(address: str, *args: float | str) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@contextlib.contextmanager
def flood_beside_a_probe(daemon: DaemonProcess, surface: str, sockets: int = 1,
                         blast: bool = False) -> Iterator[tuple[int, socket.socket, Any]]:
    """A flood at `surface`'s port from its own process, already over its budget when the block runs, and a
    second sender's socket; yields (port, probe socket, a check that the flood is still going)."""
    port = daemon.surface_port(surface)
    flood = start_flood(port, sockets=sockets, blast=blast)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    try:
        wait_for(lambda: daemon.state()["surfaces"][surface]["counters"]["rate_limited"] > 0, 60,
                 "the flood went over its budget")
        yield port, probe, lambda: flood.poll() is None
    finally:
        flood.kill()
        flood.wait()
        probe.close()


def pongs_in(data: bytes) -> set[int]:
    return {int(a) for a in OscMessage(data).params if isinstance(a, int)}


def ping(probe: socket.socket, port: int, count: int = 40) -> int:
    """Send `count` pings 50 ms apart and count the pongs (late ones waited for up to 3 s)."""
    pongs: set[int] = set()
    probe.settimeout(0.05)
    for i in range(count):
        probe.sendto(message("/avatar/ping", i), ("127.0.0.1", port))
        with contextlib.suppress(TimeoutError):
            pongs |= pongs_in(probe.recv(512))
        time.sleep(0.05)
    end = time.monotonic() + 3
    while time.monotonic() < end and len(pongs) < count:
        with contextlib.suppress(TimeoutError):
            pongs |= pongs_in(probe.recv(512))
    return len(pongs)


def calm_pongs(daemon: DaemonProcess) -> int:
    """How many of 40 pings this machine answers without a flood: what the flooded counts are held to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return ping(probe, daemon.surface_port("osc"))


@pytest.mark.parametrize(("sockets", "blast"), [(1, False), (1, True), (16, True)],
                         ids=["fast-network", "one-socket-blasting", "sixteen-ports-blasting"])
def test_an_osc_flood_does_not_starve_another_sender(daemon: DaemonProcess, sockets: int, blast: bool) -> None:
    """Events, not speeds: the pings a second sender gets answered during the flood, against the same machine's
    calm count. A blasting sender overflows the kernel's receive buffer unless the socket is drained promptly;
    sixteen ports overspend the ceiling across senders unless it is shared out."""
    frames = daemon.frames()
    calm = calm_pongs(daemon)
    with flood_beside_a_probe(daemon, "osc", sockets, blast) as (port, probe, flooding):
        answered = ping(probe, port)
        assert flooding(), "the flood ended before the probe did; it proves nothing"
        me = sender_entry(daemon, "osc", probe.getsockname()[1])
    assert me["rate_limited"] == 0, me
    assert answered >= calm - 4, f"{answered} of 40 pings answered during the flood, {calm} without it"
    daemon.assert_rendering(frames)


def test_a_vmc_flood_does_not_starve_another_sender(daemon: DaemonProcess) -> None:
    frames = daemon.frames()
    with flood_beside_a_probe(daemon, "vmc") as (port, probe, flooding):
        for i in range(40):
            val = OscMessageBuilder("/VMC/Ext/Blend/Val")
            val.add_arg("jawOpen")
            val.add_arg(0.2 + i / 100)
            probe.sendto(val.build().dgram, ("127.0.0.1", port))
            probe.sendto(message("/VMC/Ext/Blend/Apply"), ("127.0.0.1", port))
            time.sleep(0.05)
        assert flooding(), "the flood ended before the probe did; it proves nothing"
        me = wait_for(lambda: (e := sender_entry(daemon, "vmc", probe.getsockname()[1]))["packets"] >= 72 and e,
                      10, "the probe's packets seen")
    assert me["rate_limited"] == 0, me
    daemon.assert_rendering(frames)


def closed(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return False
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BlockingIOError):
        return True


def frame(payload: bytes) -> bytes:
    """An OSC 1.0 TCP frame: the size, then the packet."""
    return len(payload).to_bytes(4, "big") + payload


def ponged(sock: socket.socket) -> bool:
    """Whether the next frame on `sock` is a pong (False when the daemon closed it instead)."""
    try:
        head = sock.recv(4)
        return len(head) == 4 and b"/avatar/pong" in sock.recv(int.from_bytes(head, "big"))
    except OSError:
        return False


def test_idle_tcp_connections_are_capped_per_source_and_time_out(daemon: DaemonProcess) -> None:
    frames = daemon.frames()
    port = daemon.surface_port("osc")
    cap = daemon.config["osc"]["tcp_max_connections_per_source"]
    fds = daemon.open_fds()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(60)]
    try:
        # Each asks at once: those within the cap answer, the others are closed unanswered. Counted, and an
        # answered connection is not idle, so the idle timeout cannot stand in for the cap.
        for i, s in enumerate(socks):
            with contextlib.suppress(OSError):
                s.sendall(frame(message("/avatar/ping", i)))
        answered = sum(ponged(s) for s in socks)
        assert answered == cap, f"{answered} of {len(socks)} connections from one source answered (cap {cap})"
        wait_for(lambda: sum(closed(s) for s in socks) >= len(socks) - cap, 30,
                 "connections beyond the per-source cap closed")
        assert daemon.open_fds() <= fds + cap + 2
        wait_for(lambda: all(closed(s) for s in socks), 30, "idle connections closed after the timeout")
        # An active client is not idle: it outlives the timeout and gets answers over TCP.
        active = socket.create_connection(("127.0.0.1", port), timeout=10)
        end = time.monotonic() + 2 * daemon.config["osc"]["tcp_idle_timeout_s"]
        answered = 0
        while time.monotonic() < end:
            payload = message("/avatar/ping", answered)
            active.sendall(frame(payload))
            size = int.from_bytes(active.recv(4), "big")
            assert b"/avatar/pong" in active.recv(size)
            answered += 1
            time.sleep(0.3)
        assert answered >= 3
        active.close()
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: daemon.open_fds() <= fds + 1, 30, "the daemon's descriptors back where they were")
    daemon.assert_rendering(frames)


def test_the_table_of_senders_is_bounded(daemon: DaemonProcess) -> None:
    """A thousand source ports cost a fixed amount of memory: the least recently heard make room."""
    frames = daemon.frames()
    port = daemon.surface_port("osc")
    before = daemon.state()["surfaces"]["osc"]["counters"]["senders_evicted"]
    data = message("/avatar/blend/jawOpen", 0.1)
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", port))
    status = wait_for(lambda: (st := daemon.state()["surfaces"]["osc"])["counters"]["senders_evicted"] > before
                      and st, 30, "senders evicted from the table")
    assert len(status["senders"]) <= 32
    daemon.assert_rendering(frames)
