"""Every WebRTC session of the daemon: a peer per remote offer, its tracks, its teardown.

Each viewer is one aiortc RTCPeerConnection whose tracks carry packets of the shared encoders
(`drivers.output.webrtc.fanout`): a frame is encoded once per stream (codec, packed alpha or not, bitrate
tier), whatever the number of viewers, so a viewer costs packetizing and encryption. Sessions of every kind
(video viewers, audio-only listeners, talk-back senders) count against one cap, `webrtc.max_viewers`, and
against `webrtc.max_sessions_per_address` for the client they came from (the whole loopback range is one
client, and so is an IPv6 /64: `bridge.core.http_names.address_group`). A viewer asks for packed alpha per
offer (default: `webrtc.alpha`). A viewer that stalls only loses its own frames; one that vanishes is closed
when its connection fails, and one whose peer never connects is closed after `webrtc.connect_timeout_s`, so
offers from peers that went away cannot hold places.

Sessions are capabilities: the id is `secrets.token_urlsafe` (144 random bits), handed only to the peer that
made the offer (in the WHEP `Location`), never listed. Offers are bounded before aiortc parses them
(`offers.check_offer`). Connections use `webrtc.ice_servers` (none by default: aiortc's own default would ask
a public STUN server about every viewer). An incoming audio track (the viewer page's talk button) goes to the
WebRTC audio source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.core.config import Config, IceServer, WebRTCConfig
from bridge.core.http_names import address_group
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.codecs import answered_codec, prefer_codec
from drivers.output.webrtc.offers import OfferRefused, check_offer

if TYPE_CHECKING:
    from drivers.output.webrtc.fanout import MediaFanout

log = logging.getLogger(__name__)

SESSION_ID_BYTES = 18  # 144 random bits: 24 URL-safe characters


def rtc_configuration(servers: Iterable[IceServer]) -> Any:
    """An aiortc RTCConfiguration with `webrtc.ice_servers`: a list, empty by default (None would make aiortc
    ask Google's public STUN server about every connection)."""
    from aiortc import RTCConfiguration, RTCIceServer

    return RTCConfiguration(iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                                        for s in servers])


class SignalingError(Exception):
    def __init__(self, status: int, message: str, fix: str) -> None:
        super().__init__(message)
        self.status, self.message, self.fix = status, message, fix


@dataclass
class Peer:
    id: str
    pc: Any
    kind: str  # "viewer" (JSON endpoint), "whep", "talk" (sends audio, receives nothing)
    address: str = ""
    tracks: list[Any] = field(default_factory=list)
    talking: bool = False
    alpha: bool = False
    reaper: asyncio.TimerHandle | None = None
    claims_alpha: bool = False  # holds a claim on the avatar's alpha (MediaHub.alpha_demand) until closed


def load_webrtc_stack() -> None:
    """Import aiortc and our WebRTC modules, and make one DTLS certificate (which loads the crypto backend).
    Done when the daemon starts: imports hold the interpreter lock for hundreds of milliseconds, which on the
    first viewer's offer would fall on the stream and make frames late."""
    import aiortc  # noqa: F401
    import cryptography.hazmat.primitives.serialization  # noqa: F401  (pyOpenSSL's, on the first handshake)

    from drivers.output.webrtc import fanout, tracks  # noqa: F401
    from drivers.output.webrtc.dtls import Certificate

    Certificate.generateCertificate()


class ViewerHub:
    """Every WebRTC viewer of the daemon: creation from an offer, teardown, counting."""

    def __init__(self, hub: MediaHub, settings: WebRTCConfig) -> None:
        self.hub = hub
        self.config = settings
        self.peers: dict[str, Peer] = {}
        self._fanout: MediaFanout | None = None
        self._closing: set[asyncio.Task[bool]] = set()
        self.reaped = 0  # sessions closed because their peer never connected
        load_webrtc_stack()

    @property
    def fanout(self) -> MediaFanout:
        """The shared encoders, made on first use (from the hub's frames, speech and clock)."""
        if self._fanout is None:
            from drivers.output.webrtc.fanout import MediaFanout

            self._fanout = MediaFanout.for_hub(self.hub)
        return self._fanout

    @fanout.setter
    def fanout(self, fanout: MediaFanout) -> None:
        self._fanout = fanout

    @classmethod
    def from_config(cls, config: Config, *, hub: MediaHub) -> ViewerHub:
        """Viewers of `hub` with the [webrtc] section's codec, bitrate and viewer cap."""
        return cls(hub, config.webrtc)

    @property
    def count(self) -> int:
        """Viewers (sessions that receive media); `sessions` counts every kind."""
        return sum(1 for p in self.peers.values() if p.kind != "talk")

    @property
    def sessions(self) -> int:
        return len(self.peers)

    def _admit(self, address: str) -> None:
        """Raise SignalingError when the caps are reached (every kind of session counts)."""
        cap, per_address = self.config.max_viewers, self.config.max_sessions_per_address
        if self.sessions >= cap:
            raise SignalingError(503, f"already serving webrtc.max_viewers = {cap} sessions (viewers, listeners "
                                 "and talk-back)", "close a session, raise webrtc.max_viewers, or publish with "
                                 "WHIP to an SFU")
        group = address_group(address)
        if sum(1 for p in self.peers.values() if address_group(p.address) == group) >= per_address:
            raise SignalingError(429, f"{address or 'this address'} already has {per_address} sessions, counted "
                                 "with the loopback range or its IPv6 /64 (webrtc.max_sessions_per_address)",
                                 "end one with DELETE on its Location, or wait: sessions whose peer never "
                                 "connects end after webrtc.connect_timeout_s")

    async def answer(self, sdp: str, kind: str, offer_type: str = "offer", alpha: bool | None = None,
                     address: str = "") -> tuple[Peer, str]:
        """Build a peer for a remote offer from `address`; returns it and the answer SDP (ICE candidates
        included). `alpha`: packed colour + alpha video (None: `webrtc.alpha`). Raises SignalingError: 400 for
        offers outside the bounds, 429/503 at the caps."""
        from aiortc import RTCSessionDescription

        from drivers.output.webrtc.dtls import new_peer_connection
        from drivers.output.webrtc.tracks import audio_track, video_track

        if offer_type != "offer":
            raise SignalingError(400, f"expected an SDP offer, got type {offer_type[:40]!r}", "send {type: 'offer'}")
        try:
            check_offer(sdp)
        except OfferRefused as exc:
            raise SignalingError(400, exc.error, exc.fix) from None
        self._admit(address)
        pc = new_peer_connection(configuration=rtc_configuration(self.config.ice_servers))
        peer = Peer(id=secrets.token_urlsafe(SESSION_ID_BYTES), pc=pc, kind=kind, address=address,
                    alpha=self.config.alpha if alpha is None else alpha)
        self.peers[peer.id] = peer  # counted from now on, also while it negotiates
        peer.reaper = asyncio.get_running_loop().call_later(self.config.connect_timeout_s, self._reap, peer.id)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.close_soon(peer.id)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                peer.talking = True
                self.hub.remote_audio.consume(track)

        try:
            if "m=video" in sdp:  # before reading the offer, or aiortc ignores the codec preference
                prefer_codec(pc.addTransceiver("video", direction="sendonly"), self.config.codec, fallback=True)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                if not _remote_receives(sdp, transceiver.mid) or transceiver.kind in {t.kind for t in peer.tracks}:
                    continue
                if transceiver.kind == "video":
                    codec = answered_codec(sdp, transceiver.mid, self.config.codec)
                    video = video_track(self.fanout, codec, peer.alpha, self.hub.stats)
                    peer.tracks.append(video)
                    if peer.alpha and not peer.claims_alpha:  # packed alpha: the avatar renders it from now on
                        self.hub.alpha_demand.claim("webrtc")
                        peer.claims_alpha = True
                    video.bind(pc.addTrack(video))
                elif transceiver.kind == "audio":
                    audio = audio_track(self.fanout)
                    peer.tracks.append(audio)
                    pc.addTrack(audio)
            await pc.setLocalDescription(await pc.createAnswer())
        except SignalingError:
            await self.close(peer.id)
            raise
        except ValueError as exc:  # what aiortc raises for an offer it cannot answer
            await self.close(peer.id)
            raise SignalingError(400, f"cannot negotiate this offer: {exc}",
                                 "offer VP8 or H.264 video and Opus audio (any browser or aiortc does)") from exc
        except Exception as exc:  # not the offer's fault: say so, and keep the details in the log
            log.exception("webrtc: setting up a peer for an offer failed")
            await self.close(peer.id)
            raise SignalingError(503, f"the daemon could not set up a peer for this offer ({type(exc).__name__})",
                                 "try again; if it keeps failing, the daemon's log says why") from exc
        if not peer.tracks and not peer.talking and "a=sendonly" not in sdp:
            await self.close(peer.id)
            raise SignalingError(400, "the offer receives nothing", "use recvonly video/audio transceivers")
        if not peer.tracks:
            peer.kind = "talk"
        return peer, pc.localDescription.sdp

    def _reap(self, peer_id: str) -> None:
        """A session whose peer has not connected in time: its offer's sender went away (or never meant to come)."""
        peer = self.peers.get(peer_id)
        if peer is not None and peer.pc.connectionState != "connected":
            self.reaped += 1
            self.close_soon(peer_id)

    def close_soon(self, peer_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.close(peer_id))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, peer_id: str) -> bool:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        if peer.reaper is not None:
            peer.reaper.cancel()
        if peer.claims_alpha:
            self.hub.alpha_demand.release("webrtc")
        for track in peer.tracks:
            track.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(peer.pc.close(), 5.0)
        return True

    async def close_all(self) -> None:
        for peer_id in list(self.peers):
            await self.close(peer_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._fanout is not None:
            await self._fanout.aclose()

    def describe(self) -> list[dict[str, Any]]:
        """The sessions without their ids: an id is the capability to end a session, for its owner only."""
        out = []
        for peer in self.peers.values():
            video = next((t for t in peer.tracks if t.kind == "video"), None)
            out.append({"kind": peer.kind, "state": peer.pc.connectionState, "alpha": peer.alpha,
                        "frames_sent": getattr(video, "sent", 0), "talking": peer.talking,
                        "tier": getattr(video, "tier", None), "remb_kbps": _kbps(getattr(video, "remb", None)),
                        "pli": getattr(video, "pli", 0), "pli_ignored": getattr(video, "pli_ignored", 0),
                        "lost": getattr(video, "lost", 0)})
        return out


def _kbps(bps: int | None) -> float | None:
    return None if bps is None else round(bps / 1000.0, 1)


def _remote_receives(sdp: str, mid: str | None) -> bool:
    """True unless the remote's media section with this mid is sendonly or inactive."""
    sections = sdp.split("\nm=")[1:]
    for section in sections:
        if mid is not None and f"a=mid:{mid}" not in section:
            continue
        return "a=sendonly" not in section and "a=inactive" not in section
    return True
