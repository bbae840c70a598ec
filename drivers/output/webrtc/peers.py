"""Every WebRTC viewer of the daemon: a peer per remote offer, its tracks, its teardown.

Each viewer is one aiortc RTCPeerConnection whose tracks carry packets of the shared encoders
(`drivers.output.webrtc.fanout`): a frame is encoded once per stream (codec, packed alpha or not, bitrate
tier), whatever the number of viewers, so a viewer costs packetizing and encryption (`webrtc.max_viewers`
bounds that). A viewer asks for packed alpha per offer (default: `webrtc.alpha`). A viewer that stalls only
loses its own frames; one that vanishes is closed when its connection fails. An incoming audio track (the
viewer page's talk button) goes to the WebRTC audio source.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.core.config import Config, WebRTCConfig
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.codecs import answered_codec, prefer_codec

if TYPE_CHECKING:
    from drivers.output.webrtc.fanout import MediaFanout


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
    alpha: bool = False


class ViewerHub:
    """Every WebRTC viewer of the daemon: creation from an offer, teardown, counting."""

    def __init__(self, hub: MediaHub, settings: WebRTCConfig) -> None:
        self.hub = hub
        self.config = settings
        self.peers: dict[str, Peer] = {}
        self._fanout: MediaFanout | None = None
        self._closing: set[asyncio.Task[bool]] = set()
        self._ids = itertools.count(1)

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
        return sum(1 for p in self.peers.values() if p.kind != "talk")

    async def answer(self, sdp: str, kind: str, offer_type: str = "offer", alpha: bool | None = None) -> tuple[Peer, str]:
        """Build a peer for a remote offer; returns it and the answer SDP (ICE candidates included). `alpha`:
        packed colour + alpha video (None: `webrtc.alpha`)."""
        from aiortc import RTCSessionDescription

        from drivers.output.webrtc.dtls import new_peer_connection
        from drivers.output.webrtc.tracks import audio_track, video_track

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
        peer = Peer(id=f"{next(self._ids)}-{secrets.token_hex(6)}", pc=pc, kind=kind,
                    alpha=self.config.alpha if alpha is None else alpha)
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
                    video.bind(pc.addTrack(video))
                elif transceiver.kind == "audio":
                    audio = audio_track(self.fanout)
                    peer.tracks.append(audio)
                    pc.addTrack(audio)
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
        if self._fanout is not None:
            await self._fanout.aclose()

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for peer in self.peers.values():
            video = next((t for t in peer.tracks if t.kind == "video"), None)
            out.append({"id": peer.id, "kind": peer.kind, "state": peer.pc.connectionState, "alpha": peer.alpha,
                        "frames_sent": getattr(video, "sent", 0), "talking": peer.talking,
                        "tier": getattr(video, "tier", None), "remb_kbps": _kbps(getattr(video, "remb", None)),
                        "pli": getattr(video, "pli", 0), "lost": getattr(video, "lost", 0)})
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
