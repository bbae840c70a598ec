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

from bridge.http import bodies
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


def _location(peer_id: str) -> str:
    return f"/whep/{peer_id}"


async def json_offer(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body.get("sdp"), str):
        return error(400, "missing 'sdp' string", OFFER_FIX)
    offer_type = body.get("type", "offer")
    try:
        alpha = parse_alpha(body.get("alpha"))
        peer, answer = await request.app[VIEWERS_KEY].answer(body["sdp"], "viewer", str(offer_type), alpha,
                                                             address=request.remote or "")
    except SignalingError as err:
        return _refused(err)
    # The id and its resource URL go to this peer only: DELETE on it is the one way to end the session.
    return web.json_response({"sdp": answer, "type": "answer", "id": peer.id, "location": _location(peer.id)})


async def delete_peer(request: web.Request) -> web.Response:
    if not await request.app[VIEWERS_KEY].close(request.match_info["id"]):
        return error(404, "no such session", "it has already ended (or this is not its Location)")
    return web.json_response({"closed": True})


async def whep_post(request: web.Request) -> web.Response:
    try:
        alpha = parse_alpha(request.query.get("alpha"))
        sdp = await bodies.sdp_text(request)
        peer, answer = await request.app[VIEWERS_KEY].answer(sdp, "whep", alpha=alpha, address=request.remote or "")
    except bodies.BodyError as exc:
        return error(exc.status, exc.error, exc.fix)
    except SignalingError as err:
        return _refused(err)
    return web.Response(status=201, body=answer.encode(), content_type="application/sdp",
                        headers={"Location": _location(peer.id), "ETag": f'"{peer.id}"'})


async def whep_patch(_: web.Request) -> web.Response:
    return error(405, "trickle ICE is not supported", "send the offer after ICE gathering completes")


async def whep_options(_: web.Request) -> web.Response:
    # CORS preflights from allowed origins are answered by the request policy; this is for plain clients.
    return web.Response(status=204, headers={"Accept-Post": "application/sdp"})


async def viewers(request: web.Request) -> web.Response:
    hub = request.app[VIEWERS_KEY]
    publishers = request.app.get(PUBLISHERS_KEY, {})
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
    value = (await json_body(request)).get("delay_ms")
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 5000):
        return error(400, "delay_ms must be 'auto' or a number of ms in 0..5000",
                     'send {"delay_ms": 180} or {"delay_ms": "auto"}')
    value = value if value == "auto" else float(value)
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
    for name, publisher in publishers.items():
        publisher.start()
        hub.follow_output(f"publisher:{name}", publisher.progress)


async def _stop_all(app: web.Application) -> None:
    publishers = app.get(PUBLISHERS_KEY, {})
    for name in list(publishers):
        app[HUB_KEY].forget_output(f"publisher:{name}")
        await publishers.pop(name).stop()
    await app[VIEWERS_KEY].close_all()


def add_routes(app: web.Application) -> None:
    hub = app[HUB_KEY]
    app[VIEWERS_KEY] = registry.create("output", "viewers", hub.config, hub=hub)
    app.on_startup.append(_start_publishers)
    app.on_shutdown.append(_stop_all)
    app.router.add_post("/api/webrtc/offer", json_offer)
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
