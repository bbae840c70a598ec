"""WHIP publisher: sends the avatar (video + speech) once to an SFU or media server (LiveKit, Janus, MediaMTX,
Cloudflare) that fans it out to any number of viewers. Like every publisher it sends packets of the viewers'
shared encoders (one encode serves both) and routes the server's RTCP feedback as a viewer does.

Protocol (RFC 9725): POST the SDP offer as `application/sdp` with `Authorization: Bearer <token>`; the server
answers 201 Created with the SDP answer and a `Location` for the session; DELETE that location to stop. When
the connection fails or the server is unreachable, it publishes again with exponential backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

import aiohttp

from bridge.core.config import Config, IceServer
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.fanout import MediaFanout
from drivers.output.webrtc.publisher import Publisher

TIMEOUT = aiohttp.ClientTimeout(total=15)


class WhipError(RuntimeError):
    pass


class WhipPublisher(Publisher):
    name = "WHIP"

    def __init__(
        self,
        hub: MediaHub,
        url: str,
        token: str | None = None,
        codec: str = "vp8",
        fanout: MediaFanout | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
        ice_servers: Sequence[IceServer] = (),
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise WhipError(f"webrtc.whip_url = {url!r} is not an http(s) URL; use the WHIP endpoint of your server")
        super().__init__(hub, url, codec=codec, fanout=fanout, backoff=backoff, ice_servers=ice_servers)
        self.token = token
        self.location: str | None = None

    @classmethod
    def from_config(cls, config: Config, *, hub: MediaHub, fanout: MediaFanout | None = None) -> WhipPublisher:
        """Publishes `hub` to webrtc.whip_url with the section's token and codec; `fanout` is the
        viewers' shared encoders, so one encode serves the viewers and the media server."""
        w = config.webrtc
        if not w.whip_url:
            raise WhipError("webrtc.whip_url is not set: give the WHIP endpoint of your media server")
        return cls(hub, w.whip_url, token=w.whip_token, codec=w.codec, fanout=fanout, ice_servers=w.ice_servers)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "location": self.location}

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _open(self, offer: str) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http, \
                http.post(self.url, data=offer, headers=self._headers("application/sdp")) as r:
            body = await r.text()
            if r.status in (401, 403):
                raise WhipError(f"the WHIP server refused the token ({r.status}); check webrtc.whip_token")
            if r.status != 201:
                raise WhipError(f"the WHIP server answered {r.status} {r.reason}: {body[:200]}")
            location = r.headers.get("Location")
            if not location:
                raise WhipError("the WHIP server's 201 has no Location header")
            self.location = urljoin(self.url, location)
        await self._accept(body)

    async def _close(self) -> None:
        location, self.location = self.location, None
        if location:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http, \
                    http.delete(location, headers=self._headers()) as r:
                await r.read()
