"""WebRTC signaling routes on the daemon's HTTP server: a JSON offer/answer endpoint (the panel preview, the
viewer page), standard WHEP at `/whep`, the built-in viewer page at `/viewer`, the page for OBS's browser
source at `/obs`, the lifecycle of the publishers to media servers (WHIP, Janus) and the delayed audio
passthrough's settings. The peers themselves are `drivers.output.webrtc.peers`. Packed alpha is asked for with
`/whep?alpha=1` or `"alpha": true` in the JSON offer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.http import bodies
from bridge.http.responses import error, json_body
from bridge.http.scope import SESSION, add_route, session_of
from bridge.runtime.session import PUBLISHERS
from drivers.output.passthrough import measured_delay
from drivers.output.webrtc.peers import SignalingError

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
OFFER_FIX = "send {sdp, type: 'offer'}"


def _refused(err: SignalingError) -> web.Response:
    return error(err.status, err.message, err.fix)


def parse_alpha(value: Any) -> bool | None:
    """The `alpha` option of an offer (query string or JSON); None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SignalingError(400, f"alpha = {value!r} is not a yes/no value",
                         "use alpha=1 for packed colour + alpha video (the /obs page) or alpha=0 for plain video")


def _location(request: web.Request, peer_id: str) -> str:
    """The peer's resource: under its session's path when the offer came for a session."""
    name = request.match_info.get(SESSION)
    return f"/sessions/{name}/whep/{peer_id}" if name is not None else f"/whep/{peer_id}"


async def json_offer(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body.get("sdp"), str):
        return error(400, "missing 'sdp' string", OFFER_FIX)
    offer_type = body.get("type", "offer")
    try:
        alpha = parse_alpha(body.get("alpha"))
        peer, answer = await session_of(request).viewers.answer(body["sdp"], "viewer", str(offer_type), alpha,
                                                                address=request.remote or "")
    except SignalingError as err:
        return _refused(err)
    # The id and its resource URL go to this peer only: DELETE on it is the one way to end the session.
    return web.json_response({"sdp": answer, "type": "answer", "id": peer.id, "location": _location(request, peer.id)})


async def delete_peer(request: web.Request) -> web.Response:
    if not await session_of(request).viewers.close(request.match_info["id"]):
        return error(404, "no such session", "it has already ended (or this is not its Location)")
    return web.json_response({"closed": True})


async def whep_post(request: web.Request) -> web.Response:
    try:
        alpha = parse_alpha(request.query.get("alpha"))
        sdp = await bodies.sdp_text(request)
        peer, answer = await session_of(request).viewers.answer(sdp, "whep", alpha=alpha, address=request.remote or "")
    except bodies.BodyError as exc:
        return error(exc.status, exc.error, exc.fix)
    except SignalingError as err:
        return _refused(err)
    return web.Response(status=201, body=answer.encode(), content_type="application/sdp",
                        headers={"Location": _location(request, peer.id), "ETag": f'"{peer.id}"'})


async def whep_patch(_: web.Request) -> web.Response:
    return error(405, "trickle ICE is not supported", "send the offer after ICE gathering completes")


async def whep_options(_: web.Request) -> web.Response:
    # CORS preflights from allowed origins are answered by the request policy; this is for plain clients.
    return web.Response(status=204, headers={"Accept-Post": "application/sdp"})


async def viewers(request: web.Request) -> web.Response:
    hub = session_of(request).viewers
    publishers = session_of(request).publishers
    described = {name: (p.describe() if (p := publishers.get(name)) else None) for name in PUBLISHERS}
    cfg = hub.config
    return web.json_response({"viewers": hub.describe(), "count": hub.count, "sessions": hub.sessions,
                              "max_viewers": cfg.max_viewers, "max_sessions_per_address": cfg.max_sessions_per_address,
                              "connect_timeout_s": cfg.connect_timeout_s, "reaped": hub.reaped,
                              "ice_servers": [url for s in cfg.ice_servers
                                              for url in ([s.urls] if isinstance(s.urls, str) else s.urls)],
                              "codec": cfg.codec, "bitrate_kbps": cfg.bitrate_kbps, "encoders": hub.fanout.describe(),
                              **described})


def page(name: str) -> Any:
    """A page from static/. It takes a token from its own address: nothing of the request is echoed into it."""

    async def serve(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / f"{name}.html", headers={"Content-Type": "text/html",
                                                                  "Cache-Control": "no-store"})

    return serve


def script(name: str) -> Any:
    async def serve(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / f"{name}.js", headers={"Cache-Control": "no-store"})

    return serve


async def passthrough_get(request: web.Request) -> web.Response:
    hub = session_of(request)
    pt = hub.passthrough
    cfg = hub.config.outputs.passthrough
    if pt is not None:
        delay_ms = pt.delay * 1000.0
    else:
        delay_ms = measured_delay(hub) * 1000.0 if cfg.delay_ms == "auto" else float(cfg.delay_ms)
    return web.json_response({"enabled": pt is not None, "device": cfg.device, "mode": cfg.delay_ms,
                              "delay_ms": delay_ms, "underruns": pt.underruns if pt is not None else 0})


async def passthrough_set(request: web.Request) -> web.Response:
    hub = session_of(request)
    value = (await json_body(request)).get("delay_ms")
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 5000):
        return error(400, "delay_ms must be 'auto' or a number of ms in 0..5000",
                     'send {"delay_ms": 180} or {"delay_ms": "auto"}')
    value = value if value == "auto" else float(value)
    hub.config.outputs.passthrough.delay_ms = value
    if hub.passthrough is not None:
        hub.passthrough.set_delay(value)
    return await passthrough_get(request)


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/api/webrtc/offer", json_offer)
    add_route(app, "GET", "/api/webrtc/viewers", viewers)
    add_route(app, "POST", "/whep", whep_post)
    add_route(app, "OPTIONS", "/whep", whep_options)
    add_route(app, "DELETE", "/whep/{id}", delete_peer)
    add_route(app, "PATCH", "/whep/{id}", whep_patch)
    app.router.add_get("/api/passthrough", passthrough_get)
    app.router.add_post("/api/passthrough", passthrough_set)
    for name in ("viewer", "obs"):
        app.router.add_get(f"/{name}", page(name))
    for name in ("viewer", "obs", "alpha"):
        app.router.add_get(f"/{name}.js", script(name))
