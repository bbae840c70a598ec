"""Helpers for output tests: a real daemon (from the panel tests) and a real aiortc viewer on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.conftest import require_program
from tests.http.conftest import running_daemon
from tests.output.pulse_server import PulseServer, pulseaudio_available, running_pulseaudio

__all__ = ["ReceivedMedia", "Viewer", "base_url", "hub_of", "running_daemon", "server_tracks", "watch"]


def base_url(daemon: Any) -> str:
    return f"http://127.0.0.1:{daemon.http_port}"


def hub_of(daemon: Any) -> Any:
    return daemon.session.viewers


def server_tracks(daemon: Any, viewer: Viewer) -> tuple[Any, Any]:
    """The daemon's (video, audio) tracks for this viewer."""
    peer_id = viewer.peer_id or str(viewer.location).rsplit("/", 1)[-1]
    peer = hub_of(daemon).peers[peer_id]
    video = next((t for t in peer.tracks if t.kind == "video"), None)
    audio = next((t for t in peer.tracks if t.kind == "audio"), None)
    return video, audio


@dataclass
class ReceivedMedia:
    """(arrival monotonic time, pts, time_base) of every decoded frame, per kind."""

    video: list[tuple[float, int, Any]] = field(default_factory=list)
    audio: list[tuple[float, int, Any]] = field(default_factory=list)
    last_image: Any = None
    audio_peak: float = 0.0


@dataclass
class Viewer:
    pc: RTCPeerConnection
    media: ReceivedMedia
    tasks: list[asyncio.Task[None]]
    peer_id: str | None = None
    location: str | None = None

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await task
        await self.pc.close()


async def _consume(track: Any, media: ReceivedMedia) -> None:
    import numpy as np

    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            entry = (time.monotonic(), int(frame.pts), frame.time_base)
            if track.kind == "video":
                media.video.append(entry)
                media.last_image = frame
            else:
                media.audio.append(entry)
                media.audio_peak = max(media.audio_peak, float(np.abs(frame.to_ndarray()).max()))


async def watch(url: str, mode: str = "json", headers: dict[str, str] | None = None, alpha: bool | None = None,
                munge: Callable[[str], str] | None = None, pc: RTCPeerConnection | None = None,
                source: str | None = None) -> Viewer:
    """Connect one aiortc viewer (recvonly video + audio) through the JSON endpoint or WHEP; `alpha` asks for
    packed alpha (JSON `alpha`, WHEP `?alpha=`), `munge` edits the offer before it is sent, `pc` is the peer to
    use (default: a new one), `source` the local address the HTTP request comes from (e.g. 127.0.0.2)."""
    pc = pc or RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    media = ReceivedMedia()
    tasks: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: Any) -> None:
        tasks.append(asyncio.get_running_loop().create_task(_consume(track, media)))

    await pc.setLocalDescription(await pc.createOffer())
    offer = munge(pc.localDescription.sdp) if munge is not None else pc.localDescription.sdp
    viewer = Viewer(pc, media, tasks)
    connector = None if source is None else aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        if mode == "json":
            body: dict[str, Any] = {"sdp": offer, "type": "offer"}
            if alpha is not None:
                body["alpha"] = alpha
            async with http.post(url + "/api/webrtc/offer", json=body) as r:
                body = await r.json()
                assert r.status == 200, body
            viewer.peer_id = body["id"]
            answer = body["sdp"]
        else:
            query = "" if alpha is None else f"?alpha={int(alpha)}"
            async with http.post(url + "/whep" + query, data=offer,
                                 headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 201, await r.text()
                assert r.content_type == "application/sdp"
                viewer.location = r.headers["Location"]
                answer = await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return viewer


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.fixture
def pulse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    """A real PulseAudio server that this process (libpulse, pactl, PortAudio's ALSA pulse device) reaches
    through PULSE_SERVER."""
    require_program("pulseaudio", "pulseaudio pulseaudio-utils", found=pulseaudio_available())
    with running_pulseaudio(tmp_path / "pulse") as server:
        monkeypatch.setenv("PULSE_SERVER", server.address)
        monkeypatch.setenv("HOME", server.env["HOME"])
        yield server


async def first_error(publisher: Any, timeout: float = 30.0) -> str:
    """Start a publisher (drivers.output.webrtc.publisher) that cannot publish; its first error, then stop it."""
    publisher.start()
    try:
        await wait_until(lambda: publisher.last_error is not None, timeout, "an error")
        return str(publisher.last_error)
    finally:
        await publisher.stop()


@contextlib.asynccontextmanager
async def viewer_of(daemon: Any, mode: str = "json") -> AsyncIterator[Viewer]:
    viewer = await watch(base_url(daemon), mode)
    try:
        yield viewer
    finally:
        await viewer.close()
