"""Fixtures of the attack tests: one demo daemon process for the session, and the pages of two other origins
(an attacker's, and a third-party WHEP player the user allowed in `http.allowed_origins`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.security.daemon import DaemonProcess
from tests.security.pages import PageServer, page


@dataclass
class Origins:
    attacker: PageServer
    player: PageServer

    @property
    def attacker_origin(self) -> str:
        return self.attacker.origin("attacker")

    @property
    def player_origin(self) -> str:
        return self.player.origin("player")


@pytest.fixture(scope="session")
def origins() -> Iterator[Origins]:
    servers = Origins(PageServer(page()), PageServer(page()))
    yield servers
    servers.attacker.close()
    servers.player.close()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory, origins: Origins) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path_factory.mktemp("daemon"),
                         {"http": {"allowed_origins": [origins.player_origin]}})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class FakeStun:
    """A STUN server on a loopback UDP port that answers Binding requests and counts them."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        from aioice import stun

        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
                request = stun.parse_message(data)
            except (TimeoutError, ValueError):
                continue
            except OSError:
                return
            if request.message_method == stun.Method.BINDING and request.message_class == stun.Class.REQUEST:
                self.requests += 1
                response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id)
                response.attributes["XOR-MAPPED-ADDRESS"] = addr
                self.sock.sendto(bytes(response), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


TOKEN = "k3Yq-8vLm2Pz_Rw9tXa4Nc7Bd1Fe6Gh0"


@pytest.fixture(scope="session")
def stun() -> Iterator[FakeStun]:
    server = FakeStun()
    yield server
    server.close()


@pytest.fixture(scope="session")
def guarded(tmp_path_factory: pytest.TempPathFactory, stun: FakeStun) -> Iterator[DaemonProcess]:
    """A daemon with a token, verbose logs and a configured (local) STUN server."""
    proc = DaemonProcess(tmp_path_factory.mktemp("guarded"),
                         {"http": {"token": TOKEN},
                          "webrtc": {"ice_servers": [{"urls": f"stun:127.0.0.1:{stun.port}"}]}},
                         verbose=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
