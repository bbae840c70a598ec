"""Every WebRTC viewer of the daemon: a peer per remote offer, its tracks, its teardown.

Each viewer is one aiortc RTCPeerConnection with its own tracks and its own encoder (aiortc does not share
encodes between senders), so the number of viewers is capped by `webrtc.max_viewers`; for an audience,
publish once with WHIP to an SFU. A viewer that stalls only loses its own frames; one that vanishes is closed
when its connection fails. An incoming audio track (the viewer page's talk button) goes to the WebRTC audio
source.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

from bridge.core.config import Config, WebRTCConfig
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.codecs import apply_bitrate, prefer_codec


class SignalingError(Exception):
    def __init__(self, status: int, message: str, fix: str) -> None:
        super().__init__(message)
        self.status, self.message, self.fix = status, message, fix


@dataclass
class Peer:
    id: str
    pc: Any
    kind: str  # "viewer" (JSON endpoint), "whep"
    tracks: list[Any] = field(default_factory=list)
    talking: bool = False


class ViewerHub:
    """Every WebRTC viewer of the daemon: creation from an offer, teardown, counting."""

    def __init__(self, hub: MediaHub, settings: WebRTCConfig) -> None:
        from drivers.output.webrtc.tracks import SharedI420

        self.hub = hub
        self.config = settings
        self.peers: dict[str, Peer] = {}
        self.shared = SharedI420()
        self._closing: set[asyncio.Task[bool]] = set()
        self._ids = itertools.count(1)
        apply_bitrate(self.config.codec, self.config.bitrate_kbps)

    @classmethod
    def from_config(cls, config: Config, *, hub: MediaHub) -> ViewerHub:
        """Viewers of `hub` with the [webrtc] section's codec, bitrate and viewer cap."""
        return cls(hub, config.webrtc)

    @property
    def count(self) -> int:
        return sum(1 for p in self.peers.values() if p.kind != "talk")

    async def answer(self, sdp: str, kind: str, offer_type: str = "offer") -> tuple[Peer, str]:
        """Build a peer for a remote offer; returns it and the answer SDP (ICE candidates included)."""
        from aiortc import RTCSessionDescription

        from drivers.output.webrtc.dtls import new_peer_connection
        from drivers.output.webrtc.tracks import tracks_for

        if offer_type != "offer":
            raise SignalingError(400, f"expected an SDP offer, got type {offer_type!r}", "send {type: 'offer'}")
        if not sdp.lstrip().startswith("v=0"):
            raise SignalingError(400, "the body is not an SDP offer (it must start with 'v=0')",
                                 "send the localDescription.sdp of an RTCPeerConnection")
        if "m=video" not in sdp and "m=audio" not in sdp:
            raise SignalingError(400, "the offer has no audio or video section",
                                 "add a recvonly video transceiver (and audio) before createOffer()")
        if self.count >= self.config.max_viewers and ("m=video" in sdp):
            raise SignalingError(503, f"already serving webrtc.max_viewers = {self.config.max_viewers} viewers",
                                 "close a viewer, raise webrtc.max_viewers, or publish with WHIP to an SFU")
        pc = new_peer_connection()
        peer = Peer(id=f"{next(self._ids)}-{secrets.token_hex(6)}", pc=pc, kind=kind)
        self.peers[peer.id] = peer

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
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            video, audio = tracks_for(self.hub, self.shared)
            for transceiver in pc.getTransceivers():
                remote_receives = _remote_receives(sdp, transceiver.mid)
                if transceiver.kind == "video" and remote_receives:
                    prefer_codec(transceiver, self.config.codec)
                    pc.addTrack(video)
                    peer.tracks.append(video)
                elif transceiver.kind == "audio" and remote_receives:
                    pc.addTrack(audio)
                    peer.tracks.append(audio)
            for track in (video, audio):
                if track not in peer.tracks:
                    track.stop()
            await pc.setLocalDescription(await pc.createAnswer())
        except SignalingError:
            await self.close(peer.id)
            raise
        except Exception as exc:
            await self.close(peer.id)
            raise SignalingError(400, f"cannot negotiate this offer: {exc}",
                                 "offer VP8 or H.264 video and Opus audio (any browser or aiortc does)") from exc
        if not peer.tracks and not peer.talking and "a=sendonly" not in sdp:
            await self.close(peer.id)
            raise SignalingError(400, "the offer receives nothing", "use recvonly video/audio transceivers")
        if not peer.tracks:
            peer.kind = "talk"
        return peer, pc.localDescription.sdp

    def close_soon(self, peer_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.close(peer_id))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, peer_id: str) -> bool:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
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

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for peer in self.peers.values():
            video = next((t for t in peer.tracks if t.kind == "video"), None)
            out.append({"id": peer.id, "kind": peer.kind, "state": peer.pc.connectionState,
                        "frames_sent": getattr(video, "sent", 0), "talking": peer.talking})
        return out


def _remote_receives(sdp: str, mid: str | None) -> bool:
    """True unless the remote's media section with this mid is sendonly or inactive."""
    sections = sdp.split("\nm=")[1:]
    for section in sections:
        if mid is not None and f"a=mid:{mid}" not in section:
            continue
        return "a=sendonly" not in section and "a=inactive" not in section
    return True
