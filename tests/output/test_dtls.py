"""DTLS with a remote whose certificate is RSA (as GStreamer's webrtcbin makes by default), in aiortc alone:
a WHEP viewer with an RSA certificate offers, the daemon answers as the DTLS client, and the viewer as DTLS
server picks an ECDHE-RSA suite from what the daemon offers. With aiortc's own ECDSA-only list the same
viewer fails: that is the "no shared cipher" this fixes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCCertificate, generate_certificate
from cryptography.hazmat.primitives.asymmetric import rsa

from drivers.output.webrtc import dtls
from tests.output.conftest import base_url, running_daemon, wait_until, watch

RSA_ONLY = b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA"
AIORTC_OWN = b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"


class RsaCertificate(RTCCertificate):
    """A peer like webrtcbin: an RSA key, and only suites an RSA key can sign."""

    @classmethod
    def generate(cls) -> RsaCertificate:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key=key, cert=generate_certificate(key))  # type: ignore[arg-type]

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> Any:
        ctx = super()._create_ssl_context(srtp_profiles)
        ctx.set_cipher_list(RSA_ONLY)
        return ctx


def rsa_peer() -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc._RTCPeerConnection__certificates = [RsaCertificate.generate()]  # type: ignore[attr-defined]
    return pc


async def test_a_viewer_with_an_rsa_certificate_plays_whep(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_daemon() as daemon:
        viewer = await watch(base_url(daemon), "whep", pc=rsa_peer())
        try:
            await wait_until(lambda: len(viewer.media.video) >= 10, 30, "10 frames at the RSA viewer")
            assert viewer.pc.connectionState == "connected"
        finally:
            await viewer.close()

        # The same viewer against aiortc's own cipher list: the handshake fails.
        monkeypatch.setattr(dtls, "CIPHERS", AIORTC_OWN)
        viewer = await watch(base_url(daemon), "whep", pc=rsa_peer())
        try:
            await wait_until(lambda: viewer.pc.connectionState == "failed", 30, "the handshake failing")
            await asyncio.sleep(0.5)
            assert not viewer.media.video
        finally:
            await viewer.close()
