"""Web pages from other origins: an attacker's page and a third-party WHEP player, each served by a second
local HTTP server on its own port. Chromium maps every `*.example` name to 127.0.0.1, so the pages live at
`http://attacker.example:PORT` and `http://player.example:PORT` like pages from the internet would."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESOLVER_FLAGS = ("--host-resolver-rules=MAP *.example 127.0.0.1",)

# Every state-changing endpoint of the daemon with a body that would change something if it were accepted.
ATTACKS: dict[str, object] = {
    "/api/control": {"target": "blend/mouthPucker", "values": [1.0]},
    "/api/freeze": {"frozen": True},
    "/api/mute": {"muted": True},
    "/api/idle": {"sway": True, "sway_amount": 3},
    "/api/audio/source": {"source": "silence"},
    "/api/audio/output": {"device": 0},
    "/api/presets/capture": {"name": "pwned"},
    "/api/presets/apply": {"name": "smile", "value": 1},
    "/api/presets/reload": {},
    "/api/passthrough": {"delay_ms": 4321},
    "/api/midi/learn/start": {"target": "blend/jawOpen"},
    "/api/scene/background": {"name": "green"},
    "/api/record": {"recording": True},
}

ATTACK_SCRIPT = """<script>
"use strict";
const ATTACKS = %(attacks)s;
async function offer() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { setTimeout(r, 1500);
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  window.held = (window.held || []).concat([pc]);  // never answered: the peer vanishes
  return pc.localDescription.sdp;
}
function bodies(json) {
  const form = new URLSearchParams(); form.set("json", json);
  for (const [k, v] of Object.entries(JSON.parse(json))) form.set(k, String(v));
  const multipart = new FormData(); multipart.set("json", json);
  return [
    [json, { "Content-Type": "text/plain" }],
    [form, {}],                      // application/x-www-form-urlencoded
    [multipart, {}],                 // multipart/form-data
    [new Blob([json]), {}],          // no Content-Type at all
  ];
}
async function send(url, body, headers, method) {
  try { await fetch(url, { method: method || "POST", mode: "no-cors", headers, body }); return 1; }
  catch (e) { return 1; }            // an opaque refusal still reached the daemon
}
window.attack = async (daemon) => {
  let sent = 0;
  for (const [path, payload] of Object.entries(ATTACKS)) {
    for (const [body, headers] of bodies(JSON.stringify(payload))) sent += await send(daemon + path, body, headers);
  }
  // Ten viewer sessions whose peer never answers, through both signalling endpoints.
  for (let i = 0; i < 10; i++) {
    const sdp = await offer();
    sent += await send(daemon + "/api/webrtc/offer", JSON.stringify({ sdp, type: "offer" }), { "Content-Type": "text/plain" });
    sent += await send(daemon + "/whep", sdp, { "Content-Type": "application/sdp" });
  }
  return sent;
};
</script>
"""

PLAYER_SCRIPT = """<script>
"use strict";
window.whep = async (daemon) => {
  const out = {};
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (e) => { document.getElementById("v").srcObject = new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { setTimeout(r, 2000);
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  try {
    const res = await fetch(daemon + "/whep", { method: "POST", headers: { "Content-Type": "application/sdp" },
                                                body: pc.localDescription.sdp });
    out.status = res.status;
    out.location = res.headers.get("Location");
    out.etag = res.headers.get("ETag");
    if (res.status === 201) await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  } catch (e) { out.error = String(e); }
  return out;
};
window.framesDecoded = async () => {
  let n = 0;
  (await window.pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "video") n = r.framesDecoded; });
  return n;
};
window.hangup = async (daemon, location) => {
  try { return (await fetch(new URL(location, daemon), { method: "DELETE" })).status; }
  catch (e) { return String(e); }
};
</script>
"""


class PageServer:
    """Serves one page at `/` from its own port (another origin than the daemon's)."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def origin(self, name: str) -> str:
        return f"http://{name}.example:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def page() -> str:
    """The same page for both origins: what differs between the attacker and the player is where it is from."""
    head = '<!doctype html><meta charset="utf-8"><title>a page</title><video id="v" autoplay muted playsinline></video>'
    return head + ATTACK_SCRIPT.replace("%(attacks)s", json.dumps(ATTACKS)) + PLAYER_SCRIPT
