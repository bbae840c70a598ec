"""Remote SDP offers checked before aiortc parses them: size, media sections, ICE candidates; then read by
aiortc's parser, so that an offer aiortc cannot read is the offer's fault (400), not the daemon's.

aiortc pairs every remote candidate with every local one and re-sorts its check list on each, all on the
event loop: an offer with 10,000 candidates kept the loop (and so HTTP, OSC and every viewer) busy for minutes.
A browser's offer for one viewer has two or three media sections and a handful of candidates per section, so
the bounds below refuse only offers no real peer sends, with a few linear scans of at most 64 KiB.
"""

from __future__ import annotations

MAX_OFFER_BYTES = 64 * 1024
MAX_MEDIA_SECTIONS = 4  # video + audio (+ a talk-back section); each becomes a transceiver and maybe an encoder
MAX_CANDIDATES = 64


class OfferRefused(ValueError):
    """An offer outside the bounds: what was wrong and what a peer should send instead."""

    def __init__(self, error: str, fix: str) -> None:
        super().__init__(error)
        self.error, self.fix = error, fix


def check_offer(sdp: str) -> None:
    """Raise `OfferRefused` unless `sdp` looks like an offer a viewer would send, within the bounds."""
    size = len(sdp.encode("utf-8", "surrogatepass"))
    if size > MAX_OFFER_BYTES:
        raise OfferRefused(f"the offer is {size} bytes: too large (at most {MAX_OFFER_BYTES})",
                           "send the localDescription.sdp of one RTCPeerConnection")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferRefused("the body is not an SDP offer (it must start with 'v=0')",
                           "send the localDescription.sdp of an RTCPeerConnection")
    sections = candidates = 0
    kinds = set()
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections += 1
            kinds.add(line[2:].split(" ", 1)[0])
        elif line.startswith("a=candidate:"):
            candidates += 1
    if not kinds & {"audio", "video"}:
        raise OfferRefused("the offer has no audio or video section",
                           "add a recvonly video transceiver (and audio) before createOffer()")
    if sections > MAX_MEDIA_SECTIONS:
        raise OfferRefused(f"the offer has {sections} media sections (at most {MAX_MEDIA_SECTIONS})",
                           "offer one video and one audio section")
    if candidates > MAX_CANDIDATES:
        raise OfferRefused(f"the offer has {candidates} ICE candidates (at most {MAX_CANDIDATES})",
                           "offer fewer network interfaces, or use a TURN server")
    from aiortc.sdp import SessionDescription

    try:
        SessionDescription.parse(sdp)  # aiortc's own parser, here on text already within the bounds above
    except Exception as exc:  # a malformed offer trips it in many ways (StopIteration, KeyError, ValueError, ...)
        raise OfferRefused(f"the offer is not valid SDP ({type(exc).__name__} in aiortc's parser)",
                           "send the localDescription.sdp of an RTCPeerConnection as it is") from None
