"""Codec choices for WebRTC peers: which video codec is offered or answered (the encoders are `encoder`).

aiortc settles an answer's codecs while it reads the remote offer, so preferences set on a transceiver after
that are ignored: an answerer that wants `webrtc.codec` first creates its video transceiver, with the
preference, before it reads the offer. A viewer that cannot decode the configured codec gets the other one
(the shared encoders serve both), and `answered_codec` says which, from the offer, as aiortc decides it.
"""

from __future__ import annotations

from typing import Any

MIME_TYPES = {"vp8": "video/VP8", "h264": "video/H264"}
"""The video codecs webrtc.codec may name, by their SDP MIME type."""


def prefer_codec(transceiver: Any, codec: str, fallback: bool = False) -> None:
    """Offer only `codec` (plus its retransmission format) for the video of this peer; with `fallback`, the
    other video codec after it."""
    from aiortc import RTCRtpSender

    order = [codec, *(c for c in MIME_TYPES if c != codec and fallback)]
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for name in order for c in caps if c.mimeType == MIME_TYPES[name]]
    transceiver.setCodecPreferences(chosen + [c for c in caps if c.mimeType == "video/rtx"])


def answered_codec(offer_sdp: str, mid: str | None, codec: str) -> str:
    """The video codec an answer made with `prefer_codec(..., codec, fallback=True)` uses for the offer's
    section `mid`: `codec` when the offer lists it, else the other one."""
    from aiortc.sdp import SessionDescription

    for media in SessionDescription.parse(offer_sdp).media:
        if media.kind == "video" and (mid is None or media.rtp.muxId == mid):
            offered = {c.mimeType.lower() for c in media.rtp.codecs}
            if MIME_TYPES[codec].lower() in offered:
                return codec
            return next((name for name, mime in MIME_TYPES.items() if mime.lower() in offered), codec)
    return codec
