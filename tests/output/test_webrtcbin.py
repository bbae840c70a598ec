"""GStreamer's webrtcbin, with its default RSA certificate, plays `/whep`: the daemon answers as the DTLS
client and offers ECDHE-RSA suites beside aiortc's ECDHE-ECDSA ones (drivers.output.webrtc.dtls). With
aiortc's own list webrtcbin fails with OpenSSL's "no shared cipher". The player runs in the system Python
that has GStreamer's bindings (tests/output/webrtcbin_whep.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from tests.conftest import needs_program
from tests.output.conftest import base_url, running_daemon

PLAYER = Path(__file__).with_name("webrtcbin_whep.py")
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = ("python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-bad gstreamer1.0-nice")


def webrtcbin_missing() -> str | None:
    """Why webrtcbin cannot run here, or None when it can."""
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0');"
             "from gi.repository import Gst; Gst.init(None);"
             "missing = [n for n in ('webrtcbin', 'nicesrc', 'dtlsdec', 'vp8dec', 'opusdec')"
             " if Gst.ElementFactory.find(n) is None]; print(' '.join(missing))")
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no system Python with GStreamer ({exc})"
    if out.returncode != 0 or out.stdout.strip():
        return f"GStreamer's webrtcbin is incomplete here ({out.stdout.strip() or out.stderr.strip()[-200:]})"
    return None


MISSING = webrtcbin_missing()


@needs_program(f"GStreamer's webrtcbin for {SYSTEM_PYTHON} ({MISSING})", PACKAGES, found=MISSING is None)
async def test_gstreamer_webrtcbin_plays_whep_with_its_rsa_certificate() -> None:
    async with running_daemon() as daemon:
        proc = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, str(PLAYER), base_url(daemon) + "/whep", "--frames", "10", "--timeout", "120",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        lines = out.decode().strip().splitlines()
        assert lines, f"the player printed nothing: {err.decode(errors='replace')[-2000:]}"
        result = json.loads(lines[-1])
        assert result["error"] is None, result
        assert "connected" in result["states"], result
        assert result["frames"] >= 10 and result["audio_buffers"] > 0, result
        assert result["mean"] > 20, f"webrtcbin decodes a black picture: {result}"
        assert proc.returncode == 0
