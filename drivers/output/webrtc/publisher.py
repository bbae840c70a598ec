"""What every publisher to a media server shares: one outgoing peer (the avatar's video + speech), a session
that is opened, watched and closed, and republishing with exponential backoff when it ends or fails.

A protocol (WHIP, the Janus VideoRoom API) subclasses `Publisher` and says how to open a session with an SDP
offer (`_open`) and how to end it on the server (`_close`). `progress()` tells the daemon's watchdog how the
publisher is, so `/health` names one whose server stopped answering or refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from bridge.core.config import IceServer
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.codecs import prefer_codec
from drivers.output.webrtc.dtls import new_peer_connection
from drivers.output.webrtc.fanout import MediaFanout
from drivers.output.webrtc.peers import rtc_configuration
from drivers.output.webrtc.tracks import audio_track, video_track

log = logging.getLogger(__name__)

CONNECT_GRACE_S = 15.0  # how long publishing may take to start (ICE, the server's answer) before it is stalled


class Publisher:
    """Publishes the daemon's tracks once to a server and keeps doing so until stopped."""

    name = "publisher"

    def __init__(self, hub: MediaHub, url: str, codec: str = "vp8", fanout: MediaFanout | None = None,
                 backoff: tuple[float, float] = (1.0, 30.0), ice_servers: Sequence[IceServer] = ()) -> None:
        self.hub = hub
        self.ice_servers = list(ice_servers)  # webrtc.ice_servers: none by default, no public STUN server
        self.url = url
        self.codec = codec
        self._fanout = fanout  # the viewers' shared encoders; None: its own (a publisher without viewers)
        self._own_fanout = False
        self.backoff = backoff
        self.state = "idle"
        self.last_error: str | None = None
        self.sessions = 0  # successful publishes (reconnects = sessions - 1)
        self._pc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ended: asyncio.Event | None = None
        self._connecting_since = time.monotonic()

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state, "sessions": self.sessions, "last_error": self.last_error}

    def progress(self) -> tuple[float | None, str | None]:
        """An OutputProbe: progress is now while publishing (or within CONNECT_GRACE_S of starting to
        connect); a session that ended or failed gives up with its last error until one is up again."""
        now = time.monotonic()
        if self.state == "publishing":
            return now, None
        if self.state == "connecting":
            return min(now, self._connecting_since + CONNECT_GRACE_S), None
        if self.state in ("retrying", "reconnecting"):
            return None, f"{self.name} to {self.url}: {self.last_error or 'the session ended'}"
        return None, None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        delay = self.backoff[0]
        while True:
            try:
                self.state = "connecting"
                self._connecting_since = time.monotonic()
                self._ended = asyncio.Event()
                await self._open(await self._offer())
                self.sessions += 1
                self.last_error = None
                delay = self.backoff[0]
                await self._ended.wait()
                self.state = "reconnecting"
                log.warning("%s session to %s ended; publishing again", self.name, self.url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.state = "retrying"
                self.last_error = str(exc)
                log.warning("%s publish to %s failed (%s); retrying in %.0f s", self.name, self.url, exc, delay)
            await self._teardown()
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, self.backoff[1])

    async def _offer(self) -> str:
        """A new send-only peer with the daemon's video and audio; returns its offer (ICE gathered)."""
        pc = new_peer_connection(configuration=rtc_configuration(self.ice_servers))
        self._pc = pc
        ended = self._ended
        assert ended is not None

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                ended.set()
            elif pc.connectionState == "connected":
                self.state = "publishing"

        if self._fanout is None:
            self._fanout = MediaFanout.for_hub(self.hub)
            self._own_fanout = True
        video = video_track(self._fanout, self.codec, stats=self.hub.stats)
        transceiver = pc.addTransceiver(video, direction="sendonly")
        prefer_codec(transceiver, self.codec)
        video.bind(transceiver.sender)  # the server's PLI and REMB reach the shared encoder like a viewer's
        pc.addTransceiver(audio_track(self._fanout), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def _accept(self, answer: str) -> None:
        """Apply the server's SDP answer to the current peer."""
        from aiortc import RTCSessionDescription

        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def _session_ended(self) -> None:
        """The server ended the session (or the link to it broke): publish again."""
        if self._ended is not None:
            self._ended.set()

    async def _open(self, offer: str) -> None:
        """Open a session on the server with `offer` and apply its answer (raises with a fix on refusal)."""
        raise NotImplementedError

    async def _close(self) -> None:
        """End the session on the server, if one is open (errors are ignored: the server may be gone)."""

    async def _teardown(self) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            for sender in pc.getSenders():
                if sender.track is not None:
                    sender.track.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._close(), 5.0)

    async def stop(self) -> None:
        """End the session on the server and stop publishing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._teardown()
        if self._own_fanout and self._fanout is not None:
            await self._fanout.aclose()
        self.state = "stopped"
