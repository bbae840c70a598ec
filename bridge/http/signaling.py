"""WebRTC signaling on the daemon's HTTP server: a JSON offer/answer endpoint (the panel preview, the viewer
page), standard WHEP at `/whep`, the built-in viewer page at `/viewer`, and the WHIP publisher's lifecycle.

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
import json
import logging
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bridge.daemon import Daemon

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
HUB_KEY: web.AppKey[Any] = web.AppKey("viewer_hub", object)
VIEWERS_KEY = "viewer_count"  # read by bridge.http.api for /api/status


def apply_bitrate(codec: str, kbps: int) -> None:
    """aiortc reads its start bitrate from module constants; congestion feedback then moves it within bounds."""
    from aiortc.codecs import h264, vpx

    bps = kbps * 1000
    module: Any = h264 if codec == "h264" else vpx
    module.DEFAULT_BITRATE = bps
    module.MAX_BITRATE = max(bps, int(bps * 1.5))
    module.MIN_BITRATE = min(module.MIN_BITRATE, bps)


def prefer_codec(transceiver: Any, codec: str) -> None:
    """Offer only `codec` (plus its retransmission format) for the video of this peer."""
    from aiortc import RTCRtpSender

    want = "video/H264" if codec == "h264" else "video/VP8"
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in caps if c.mimeType == want] + [c for c in caps if c.mimeType == "video/rtx"]
    transceiver.setCodecPreferences(chosen)


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

    def __init__(self, daemon: Daemon) -> None:
        from drivers.output.webrtc_tracks import SharedI420

        self.daemon = daemon
        self.config = daemon.config.webrtc
        self.peers: dict[str, Peer] = {}
        self.shared = SharedI420()
        self._closing: set[asyncio.Task[bool]] = set()
        self._ids = itertools.count(1)
        apply_bitrate(self.config.codec, self.config.bitrate_kbps)

    @property
    def count(self) -> int:
        return sum(1 for p in self.peers.values() if p.kind != "talk")

    async def answer(self, sdp: str, kind: str, offer_type: str = "offer") -> tuple[Peer, str]:
        """Build a peer for a remote offer; returns it and the answer SDP (ICE candidates included)."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from drivers.audio.webrtc_in import INBOX
        from drivers.output.webrtc_tracks import tracks_for

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
        pc = RTCPeerConnection()
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
                INBOX.consume(track)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            video, audio = tracks_for(self.daemon, self.shared)
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


def _error(err: SignalingError) -> web.Response:
    return web.json_response({"error": err.message, "fix": err.fix}, status=err.status)


def setup(app: web.Application, daemon: Daemon) -> None:
    hub = ViewerHub(daemon)
    app[HUB_KEY] = hub
    with warnings.catch_warnings():  # the status API looks this up by its plain-string name
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app[VIEWERS_KEY] = lambda: hub.count  # type: ignore[index]
    whip_holder: dict[str, Any] = {}

    async def json_offer(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body is not JSON", "fix": "send {sdp, type: 'offer'}"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
            return web.json_response({"error": "missing 'sdp' string", "fix": "send {sdp, type: 'offer'}"},
                                     status=400)
        try:
            peer, answer = await hub.answer(body["sdp"], "viewer", str(body.get("type", "offer")))
        except SignalingError as err:
            return _error(err)
        return web.json_response({"sdp": answer, "type": "answer", "id": peer.id})

    async def delete_peer(request: web.Request) -> web.Response:
        if not await hub.close(request.match_info["id"]):
            return web.json_response({"error": "no such session", "fix": "it has already ended"}, status=404)
        return web.json_response({"closed": request.match_info["id"]})

    async def whep_post(request: web.Request) -> web.Response:
        if request.content_type != "application/sdp":
            return web.json_response(
                {"error": f"WHEP needs Content-Type application/sdp, got {request.content_type!r}",
                 "fix": "POST the SDP offer as the raw body with Content-Type: application/sdp"}, status=415)
        try:
            peer, answer = await hub.answer(await request.text(), "whep")
        except SignalingError as err:
            return _error(err)
        location = f"/whep/{peer.id}"
        return web.Response(status=201, body=answer.encode(), content_type="application/sdp",
                            headers={"Location": location, "ETag": f'"{peer.id}"',
                                     "Access-Control-Expose-Headers": "Location, ETag"})

    async def whep_patch(_: web.Request) -> web.Response:
        return web.json_response({"error": "trickle ICE is not supported",
                                  "fix": "send the offer after ICE gathering completes"}, status=405)

    async def whep_options(_: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "Accept-Post": "application/sdp", "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type"})

    async def viewers(_: web.Request) -> web.Response:
        whip = whip_holder.get("client")
        return web.json_response({"viewers": hub.describe(), "count": hub.count,
                                  "max_viewers": hub.config.max_viewers, "codec": hub.config.codec,
                                  "bitrate_kbps": hub.config.bitrate_kbps,
                                  "whip": whip.describe() if whip is not None else None})

    async def viewer_page(request: web.Request) -> web.Response:
        html = (STATIC / "viewer.html").read_text(encoding="utf-8")
        if request.query_string:  # the script needs the same ?token= as the page
            html = html.replace('src="viewer.js"', f'src="viewer.js?{request.query_string}"')
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def viewer_script(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "viewer.js", headers={"Cache-Control": "no-store"})

    async def start_whip(_: web.Application) -> None:
        cfg = daemon.config.webrtc
        if cfg.whip_url:
            from drivers.output.whip import WhipPublisher

            client = WhipPublisher(daemon, cfg.whip_url, token=cfg.whip_token, codec=cfg.codec, shared=hub.shared)
            whip_holder["client"] = client
            client.start()

    async def stop_all(_: web.Application) -> None:
        client = whip_holder.pop("client", None)
        if client is not None:
            await client.stop()
        await hub.close_all()
        from drivers.audio.webrtc_in import INBOX

        await INBOX.close()

    async def passthrough_get(_: web.Request) -> web.Response:
        from drivers.output.passthrough import measured_delay

        pt = daemon.passthrough
        cfg = daemon.config.outputs.passthrough
        return web.json_response({"enabled": pt is not None, "device": cfg.device, "mode": cfg.delay_ms,
                                  "delay_ms": pt.delay * 1000.0 if pt is not None else (
                                      measured_delay(daemon) * 1000.0 if cfg.delay_ms == "auto" else cfg.delay_ms),
                                  "underruns": pt.line.underruns if pt is not None else 0})

    async def passthrough_set(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            value = body["delay_ms"]
            if value != "auto":
                value = float(value)
                if not 0 <= value <= 5000:
                    raise ValueError
        except Exception:
            return web.json_response({"error": "delay_ms must be 'auto' or a number of ms in 0..5000",
                                      "fix": 'send {"delay_ms": 180} or {"delay_ms": "auto"}'}, status=400)
        daemon.config.outputs.passthrough.delay_ms = value
        if daemon.passthrough is not None:
            daemon.passthrough.set_delay(value)
        return await passthrough_get(request)

    app.on_startup.append(start_whip)
    app.on_shutdown.append(stop_all)
    app.router.add_post("/api/webrtc/offer", json_offer)
    app.router.add_delete("/api/webrtc/{id}", delete_peer)
    app.router.add_get("/api/webrtc/viewers", viewers)
    app.router.add_post("/whep", whep_post)
    app.router.add_route("OPTIONS", "/whep", whep_options)
    app.router.add_delete("/whep/{id}", delete_peer)
    app.router.add_patch("/whep/{id}", whep_patch)
    app.router.add_get("/api/passthrough", passthrough_get)
    app.router.add_post("/api/passthrough", passthrough_set)
    app.router.add_get("/viewer", viewer_page)
    app.router.add_get("/viewer.js", viewer_script)
