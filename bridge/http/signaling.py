"""WebRTC signaling routes on the daemon's HTTP server: a JSON offer/answer endpoint (the panel preview, the
viewer page), standard WHEP at `/whep`, the built-in viewer page at `/viewer`, the page for OBS's browser
source at `/obs`, the lifecycle of the publishers to media servers (WHIP, Janus) and the delayed audio
passthrough's settings. The peers themselves are `drivers.output.webrtc.peers`. Packed alpha is asked for with
`/whep?alpha=1` or `"alpha": true` in the JSON offer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.http.keys import HUB_KEY, VIEWERS_KEY
from bridge.http.responses import error, json_body
from bridge.runtime import registry
from drivers.output.passthrough import measured_delay
from drivers.output.webrtc.peers import SignalingError

if TYPE_CHECKING:
    from drivers.output.webrtc.publisher import Publisher

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
PUBLISHERS_KEY: web.AppKey[dict[str, Publisher]] = web.AppKey("publishers")  # "whip", "janus" when configured
PUBLISHERS = ("whip", "janus")
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


async def json_offer(request: web.Request) -> web.Response:
    try:
        body = await json_body(request)
    except web.HTTPBadRequest:
        return error(400, "body is not a JSON object", OFFER_FIX)
    if not isinstance(body.get("sdp"), str):
        return error(400, "missing 'sdp' string", OFFER_FIX)
    try:
        alpha = parse_alpha(body.get("alpha"))
        peer, answer = await request.app[VIEWERS_KEY].answer(body["sdp"], "viewer", str(body.get("type", "offer")),
                                                             alpha)
    except SignalingError as err:
        return _refused(err)
    return web.json_response({"sdp": answer, "type": "answer", "id": peer.id})


async def delete_peer(request: web.Request) -> web.Response:
    if not await request.app[VIEWERS_KEY].close(request.match_info["id"]):
        return error(404, "no such session", "it has already ended")
    return web.json_response({"closed": request.match_info["id"]})


async def whep_post(request: web.Request) -> web.Response:
    if request.content_type != "application/sdp":
        return error(415, f"WHEP needs Content-Type application/sdp, got {request.content_type!r}",
                     "POST the SDP offer as the raw body with Content-Type: application/sdp")
    try:
        alpha = parse_alpha(request.query.get("alpha"))
        peer, answer = await request.app[VIEWERS_KEY].answer(await request.text(), "whep", alpha=alpha)
    except SignalingError as err:
        return _refused(err)
    location = f"/whep/{peer.id}"
    return web.Response(status=201, body=answer.encode(), content_type="application/sdp",
                        headers={"Location": location, "ETag": f'"{peer.id}"',
                                 "Access-Control-Expose-Headers": "Location, ETag"})


async def whep_patch(_: web.Request) -> web.Response:
    return error(405, "trickle ICE is not supported", "send the offer after ICE gathering completes")


async def whep_options(_: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        "Accept-Post": "application/sdp", "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type"})


async def viewers(request: web.Request) -> web.Response:
    hub = request.app[VIEWERS_KEY]
    publishers = request.app.get(PUBLISHERS_KEY, {})
    described = {name: (p.describe() if (p := publishers.get(name)) else None) for name in PUBLISHERS}
    return web.json_response({"viewers": hub.describe(), "count": hub.count,
                              "max_viewers": hub.config.max_viewers, "codec": hub.config.codec,
                              "bitrate_kbps": hub.config.bitrate_kbps, "encoders": hub.fanout.describe(),
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
    hub = request.app[HUB_KEY]
    pt = hub.passthrough
    cfg = hub.config.outputs.passthrough
    if pt is not None:
        delay_ms = pt.delay * 1000.0
    else:
        delay_ms = measured_delay(hub) * 1000.0 if cfg.delay_ms == "auto" else float(cfg.delay_ms)
    return web.json_response({"enabled": pt is not None, "device": cfg.device, "mode": cfg.delay_ms,
                              "delay_ms": delay_ms, "underruns": pt.underruns if pt is not None else 0})


async def passthrough_set(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        body = await request.json()
        value = body["delay_ms"]
        if value != "auto":
            value = float(value)
            if not 0 <= value <= 5000:
                raise ValueError
    except Exception:
        return error(400, "delay_ms must be 'auto' or a number of ms in 0..5000",
                     'send {"delay_ms": 180} or {"delay_ms": "auto"}')
    hub.config.outputs.passthrough.delay_ms = value
    if hub.passthrough is not None:
        hub.passthrough.set_delay(value)
    return await passthrough_get(request)


async def _start_publishers(app: web.Application) -> None:
    hub = app[HUB_KEY]
    wanted = {"whip": hub.config.webrtc.whip_url, "janus": hub.config.webrtc.janus.url}
    publishers: dict[str, Publisher] = {
        name: registry.create("output", name, hub.config, hub=hub, fanout=app[VIEWERS_KEY].fanout)
        for name in PUBLISHERS if wanted[name]}
    app[PUBLISHERS_KEY] = publishers
    for publisher in publishers.values():
        publisher.start()


async def _stop_all(app: web.Application) -> None:
    publishers = app.get(PUBLISHERS_KEY, {})
    for name in list(publishers):
        await publishers.pop(name).stop()
    await app[VIEWERS_KEY].close_all()


def add_routes(app: web.Application) -> None:
    hub = app[HUB_KEY]
    app[VIEWERS_KEY] = registry.create("output", "viewers", hub.config, hub=hub)
    app.on_startup.append(_start_publishers)
    app.on_shutdown.append(_stop_all)
    app.router.add_post("/api/webrtc/offer", json_offer)
    app.router.add_delete("/api/webrtc/{id}", delete_peer)
    app.router.add_get("/api/webrtc/viewers", viewers)
    app.router.add_post("/whep", whep_post)
    app.router.add_route("OPTIONS", "/whep", whep_options)
    app.router.add_delete("/whep/{id}", delete_peer)
    app.router.add_patch("/whep/{id}", whep_patch)
    app.router.add_get("/api/passthrough", passthrough_get)
    app.router.add_post("/api/passthrough", passthrough_set)
    for name in ("viewer", "obs"):
        app.router.add_get(f"/{name}", page(name))
    for name in ("viewer", "obs", "alpha"):
        app.router.add_get(f"/{name}.js", script(name))
