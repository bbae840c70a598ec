"""WebRTC signaling routes on the daemon's HTTP server: a JSON offer/answer endpoint (the panel preview, the
viewer page), standard WHEP at `/whep`, the built-in viewer page at `/viewer`, the WHIP publisher's lifecycle
and the delayed audio passthrough's settings. The peers themselves are `drivers.output.webrtc.peers`.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from drivers.output.webrtc.peers import SignalingError, ViewerHub

if TYPE_CHECKING:
    from bridge.runtime.daemon import Daemon

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
HUB_KEY: web.AppKey[Any] = web.AppKey("viewer_hub", object)
VIEWERS_KEY = "viewer_count"  # read by bridge.http.api for /api/status


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
            from drivers.output.webrtc.whip import WhipPublisher

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
