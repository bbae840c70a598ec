"""WHIP publisher: sends the avatar (video + speech) once to an SFU or media server (LiveKit, Janus, MediaMTX,
Cloudflare) that fans it out to any number of viewers.

Protocol (RFC 9725): POST the SDP offer as `application/sdp` with `Authorization: Bearer <token>`; the server
answers 201 Created with the SDP answer and a `Location` for the session; DELETE that location to stop. When
the connection fails or the server is unreachable, it publishes again with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urljoin

import aiohttp

from bridge.core.config import Config
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.codecs import prefer_codec
from drivers.output.webrtc.tracks import SharedI420, tracks_for

log = logging.getLogger(__name__)


class WhipError(RuntimeError):
    pass


class WhipPublisher:
    def __init__(
        self,
        hub: MediaHub,
        url: str,
        token: str | None = None,
        codec: str = "vp8",
        shared: SharedI420 | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise WhipError(f"webrtc.whip_url = {url!r} is not an http(s) URL; use the WHIP endpoint of your server")
        self.hub = hub
        self.url = url
        self.token = token
        self.codec = codec
        self.shared = shared
        self.backoff = backoff
        self.location: str | None = None
        self.state = "idle"
        self.last_error: str | None = None
        self.sessions = 0  # successful publishes (reconnects = sessions - 1)
        self._pc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ended: asyncio.Event | None = None

    @classmethod
    def from_config(cls, config: Config, *, hub: MediaHub, shared: SharedI420 | None = None) -> WhipPublisher:
        """Publishes `hub` to webrtc.whip_url with the section's token and codec; `shared` is the viewers' RGB →
        I420 conversion, so a frame is converted once for all of them."""
        w = config.webrtc
        if not w.whip_url:
            raise WhipError("webrtc.whip_url is not set: give the WHIP endpoint of your media server")
        return cls(hub, w.whip_url, token=w.whip_token, codec=w.codec, shared=shared)

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state, "location": self.location, "sessions": self.sessions,
                "last_error": self.last_error}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="whip")

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _run(self) -> None:
        delay = self.backoff[0]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            while True:
                try:
                    await self._publish(http)
                    delay = self.backoff[0]
                    assert self._ended is not None
                    await self._ended.wait()
                    self.state = "reconnecting"
                    log.warning("WHIP session to %s ended; publishing again", self.url)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.state = "retrying"
                    self.last_error = str(exc)
                    log.warning("WHIP publish to %s failed (%s); retrying in %.0f s", self.url, exc, delay)
                await self._teardown(http)
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, self.backoff[1])

    async def _publish(self, http: aiohttp.ClientSession) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.state = "connecting"
        self._ended = asyncio.Event()
        pc = RTCPeerConnection()
        self._pc = pc
        ended = self._ended

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                ended.set()
            elif pc.connectionState == "connected":
                self.state = "publishing"

        video, audio = tracks_for(self.hub, self.shared or SharedI420())
        prefer_codec(pc.addTransceiver(video, direction="sendonly"), self.codec)
        pc.addTransceiver(audio, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(self.url, data=pc.localDescription.sdp, headers=self._headers("application/sdp")) as r:
            body = await r.text()
            if r.status in (401, 403):
                raise WhipError(f"the WHIP server refused the token ({r.status}); check webrtc.whip_token")
            if r.status != 201:
                raise WhipError(f"the WHIP server answered {r.status} {r.reason}: {body[:200]}")
            location = r.headers.get("Location")
            if not location:
                raise WhipError("the WHIP server's 201 has no Location header")
            self.location = urljoin(self.url, location)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        self.sessions += 1
        self.last_error = None

    async def _teardown(self, http: aiohttp.ClientSession | None) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            for sender in pc.getSenders():
                if sender.track is not None:
                    sender.track.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5.0)
        location, self.location = self.location, None
        if location and http is not None:
            with contextlib.suppress(Exception):
                async with http.delete(location, headers=self._headers()) as r:
                    await r.read()

    async def stop(self) -> None:
        """End the session on the server (DELETE) and stop publishing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await self._teardown(http)
        self.state = "stopped"
