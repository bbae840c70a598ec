"""Codec choices for WebRTC senders: which video codec a peer is offered, and the encoder's start bitrate."""

from __future__ import annotations

from typing import Any

MIME_TYPES = {"vp8": "video/VP8", "h264": "video/H264"}
"""The video codecs webrtc.codec may name, by their SDP MIME type."""


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

    want = MIME_TYPES[codec]
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in caps if c.mimeType == want] + [c for c in caps if c.mimeType == "video/rtx"]
    transceiver.setCodecPreferences(chosen)
