"""Which video codec an answer uses: real aiortc offers (both codecs, or one) answered by a real aiortc peer
the way the viewer hub does it; the configured codec wins when offered, else the other one, and
`answered_codec` predicts the answer's choice (the track must encode what the answer says)."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.sdp import SessionDescription

from drivers.output.webrtc.codecs import MIME_TYPES, answered_codec, prefer_codec


async def offer(only: str | None) -> str:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    if only is not None:
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == MIME_TYPES[only]])
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def answer_codec(sdp: str, configured: str) -> str:
    pc = RTCPeerConnection()
    prefer_codec(pc.addTransceiver("video", direction="sendonly"), configured, fallback=True)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    media = SessionDescription.parse(pc.localDescription.sdp).media[0]
    await pc.close()
    first = media.rtp.codecs[0].mimeType.lower()
    return next(name for name, mime in MIME_TYPES.items() if mime.lower() == first)


@pytest.mark.parametrize(("offered", "configured", "expected"), [
    (None, "vp8", "vp8"), (None, "h264", "h264"),  # both offered (VP8 first, as browsers do): configured wins
    ("vp8", "h264", "vp8"), ("h264", "vp8", "h264"),  # the viewer cannot do the configured one: the other
])
async def test_the_answer_honours_webrtc_codec_and_falls_back(offered: str | None, configured: str,
                                                             expected: str) -> None:
    sdp = await offer(offered)
    mid = SessionDescription.parse(sdp).media[0].rtp.muxId
    assert await answer_codec(sdp, configured) == expected
    assert answered_codec(sdp, mid, configured) == expected
