"""DTLS for our peers: aiortc's certificate (ECDSA P-256) with a cipher list that also accepts RSA peers.

aiortc offers only ECDHE-ECDSA suites. When we are the DTLS client (we answer an offer with setup:active,
as for WHEP, or a server answers our WHIP offer as passive) and the remote's certificate is RSA, as GStreamer's
webrtcbin makes by default, the remote finds no suite its key can sign and the handshake fails with OpenSSL's
"no shared cipher". Offering the ECDHE-RSA suites beside the ECDSA ones fixes that: the cipher is
the server's pick among what the client offers, and our own key (ECDSA) only signs when we are the server,
where the RSA suites are simply not chosen. Same AEADs and key exchange as before, nothing weaker.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCCertificate

log = logging.getLogger(__name__)

CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
)).encode()

_CERTIFICATES = "_RTCPeerConnection__certificates"  # where aiortc keeps a peer's certificates


class Certificate(RTCCertificate):
    """aiortc's ECDSA certificate, whose DTLS contexts also offer ECDHE-RSA suites."""

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> Any:
        ctx = super()._create_ssl_context(srtp_profiles)
        ctx.set_cipher_list(CIPHERS)
        return ctx


def new_peer_connection(**kwargs: Any) -> RTCPeerConnection:
    """An RTCPeerConnection that completes DTLS with RSA- as well as ECDSA-certificate remotes."""
    pc = RTCPeerConnection(**kwargs)
    if isinstance(getattr(pc, _CERTIFICATES, None), list):
        setattr(pc, _CERTIFICATES, [Certificate.generateCertificate()])
    else:  # a future aiortc keeps them elsewhere: ECDSA-only peers still work
        log.warning("this aiortc version hides its DTLS certificates; RSA-certificate peers may fail to connect")
    return pc
