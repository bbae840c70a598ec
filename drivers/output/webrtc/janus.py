"""Publishing to a Janus VideoRoom natively, over Janus's WebSocket API (no WHIP front end needed).

One WebSocket (subprotocol `janus-protocol`) carries the whole session: `create` a Janus session, `attach`
the VideoRoom plugin, `join` the room as a publisher (creating the room when it does not exist and that is
allowed), `publish` with our SDP offer (ICE gathered, no trickle) and apply the answer. A keepalive every
`KEEPALIVE` seconds keeps the session inside Janus's `session_timeout` and shows, within `KEEPALIVE +
KEEPALIVE_REPLY` seconds, a Janus that stopped answering (the media goes on over UDP without a word). Janus ending the PeerConnection
(`hangup`), the handle (`detached`), the session (`timeout`) or the socket closing ends the session here too,
and the base class publishes again with backoff. Stopping destroys the session, which makes the publisher
leave the room. Viewers subscribe through Janus (e.g. janus.js), so any number of them costs us one encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any

import aiohttp

from bridge.core.config import Config, IceServer
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.fanout import MediaFanout
from drivers.output.webrtc.publisher import Publisher

log = logging.getLogger(__name__)

PLUGIN = "janus.plugin.videoroom"
KEEPALIVE = 5.0  # seconds; Janus drops sessions after session_timeout (60 s by default) without traffic
KEEPALIVE_REPLY = 5.0  # seconds a keepalive's ack may take before Janus counts as gone
REPLY_TIMEOUT = 15.0
NO_SUCH_ROOM = 426  # JANUS_VIDEOROOM_ERROR_NO_SUCH_ROOM
UNAUTHORIZED = 433  # JANUS_VIDEOROOM_ERROR_UNAUTHORIZED (wrong PIN or secret)
MAX_MESSAGE = 1 << 20  # bytes; Janus's replies are small JSON


class JanusError(RuntimeError):
    pass


class JanusPublisher(Publisher):
    name = "Janus"

    def __init__(
        self,
        hub: MediaHub,
        url: str,
        room: int | str,
        display: str = "Avatar Bridge",
        pin: str | None = None,
        api_secret: str | None = None,
        token: str | None = None,
        create_room: bool = True,
        codec: str = "vp8",
        fanout: MediaFanout | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
        ice_servers: Sequence[IceServer] = (),
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise JanusError(f"webrtc.janus.url = {url!r} is not a WebSocket URL; use Janus's WebSocket API, "
                             "e.g. ws://127.0.0.1:8188 (janus.transport.websockets.jcfg)")
        super().__init__(hub, url, codec=codec, fanout=fanout, backoff=backoff, ice_servers=ice_servers)
        self.room = room
        self.display = display
        self.pin = pin
        self.api_secret = api_secret
        self.token = token
        self.create_room = create_room
        self.feed: int | str | None = None  # our publisher id in the room
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: int | None = None
        self._handle: int | None = None
        self._replies: dict[str, tuple[asyncio.Future[dict[str, Any]], bool]] = {}  # transaction: (reply, ack ends)
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)

    @classmethod
    def from_config(cls, config: Config, *, hub: MediaHub, fanout: MediaFanout | None = None) -> JanusPublisher:
        """Publishes `hub` to the room of webrtc.janus in webrtc.codec; `fanout` is the
        viewers' shared encoders, so one encode serves the viewers and the media server."""
        cfg = config.webrtc.janus
        if not cfg.url:
            raise JanusError("webrtc.janus.url is not set: give Janus's WebSocket API, e.g. ws://127.0.0.1:8188")
        return cls(hub, cfg.url, cfg.room, display=cfg.display, pin=cfg.pin, api_secret=cfg.api_secret,
                   token=cfg.token, create_room=cfg.create_room, codec=config.webrtc.codec, fanout=fanout,
                   ice_servers=config.webrtc.ice_servers)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "room": self.room, "feed": self.feed}

    # --- the Janus API over the socket -------------------------------------------------------------------

    async def _request(self, janus: str, timeout: float = REPLY_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send one request; return Janus's final reply to it: `success`, `error` or a plugin `event` (the
        `ack` that precedes an event is skipped), or the `ack` itself for a keepalive."""
        ws = self._ws
        if ws is None or ws.closed:
            raise JanusError("the connection to Janus is closed")
        transaction = f"{next(self._ids)}-{secrets.token_hex(4)}"
        message: dict[str, Any] = {"janus": janus, "transaction": transaction, **fields}
        if self._session is not None and janus != "create":
            message["session_id"] = self._session
        if self.api_secret:
            message["apisecret"] = self.api_secret
        if self.token:
            message["token"] = self.token
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[transaction] = (reply, janus == "keepalive")
        try:
            await ws.send_str(json.dumps(message))
            answer = await asyncio.wait_for(reply, timeout)
        except asyncio.TimeoutError:
            raise JanusError(f"Janus did not answer {janus!r} within {timeout:g} s") from None
        finally:
            self._replies.pop(transaction, None)
        if answer.get("janus") == "error":
            error = answer.get("error", {})
            code, reason = error.get("code"), error.get("reason", "")
            if code == 403:
                raise JanusError(f"Janus refused the request ({reason}); check webrtc.janus.api_secret/token")
            raise JanusError(f"Janus answered {janus!r} with error {code}: {reason}")
        return answer

    async def _plugin(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        """A VideoRoom request; returns the reply (its `plugindata.data` checked for a plugin error)."""
        fields: dict[str, Any] = {"handle_id": self._handle, "body": body}
        if jsep is not None:
            fields["jsep"] = jsep
        answer = await self._request("message", **fields)
        data = answer.get("plugindata", {}).get("data", {})
        if "error_code" in data:
            raise PluginError(int(data["error_code"]), str(data.get("error", "")))
        return answer

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Route replies to their requests; notice the events that end the session."""
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("Janus sent a message that is not JSON: %.200s", msg.data)
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("janus")
                waiter, ack_ends = self._replies.get(str(event.get("transaction")), (None, False))
                if waiter is not None and (kind != "ack" or ack_ends) and not waiter.done():
                    waiter.set_result(event)
                elif kind in ("hangup", "detached", "timeout"):
                    self.last_error = f"Janus ended the session ({kind}: {event.get('reason', 'no reason')})"
                    log.warning("%s", self.last_error)
                    self._session_ended()
                elif kind == "webrtcup":
                    self.state = "publishing"
        finally:
            for waiter, _ in self._replies.values():
                if not waiter.done():
                    waiter.set_exception(JanusError("the connection to Janus closed"))
            self._session_ended()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE)
            try:
                await self._request("keepalive", timeout=KEEPALIVE_REPLY)
            except JanusError as exc:
                self.last_error = f"Janus keepalive failed: {exc}"
                log.warning("%s", self.last_error)
                self._session_ended()
                return

    # --- the publisher's session ----------------------------------------------------------------------

    async def _connect(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=REPLY_TIMEOUT))
        try:
            self._ws = await self._http.ws_connect(self.url, protocols=("janus-protocol",), max_msg_size=MAX_MESSAGE)
        except (aiohttp.ClientError, OSError) as exc:
            raise JanusError(f"cannot reach Janus at {self.url} ({exc}); is it running with the WebSocket "
                             "transport enabled?") from exc
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._read(self._ws), name="janus-read"))
        created = await self._request("create")
        self._session = int(created["data"]["id"])
        attached = await self._request("attach", plugin=PLUGIN)
        self._handle = int(attached["data"]["id"])
        self._tasks.append(loop.create_task(self._keepalive(), name="janus-keepalive"))

    async def _join(self) -> None:
        body: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": self.room, "display": self.display}
        if self.pin:
            body["pin"] = self.pin
        try:
            joined = await self._plugin(body)
        except PluginError as exc:
            if exc.code == NO_SUCH_ROOM and self.create_room:
                await self._create_room()
                joined = await self._plugin(body)
            elif exc.code == NO_SUCH_ROOM:
                raise JanusError(f"Janus has no VideoRoom room {self.room!r}; create it (janus.plugin.videoroom"
                                 ".jcfg) or set webrtc.janus.create_room = true") from exc
            elif exc.code == UNAUTHORIZED:
                raise JanusError(f"Janus refused to let us into room {self.room!r} ({exc.reason}); "
                                 "check webrtc.janus.pin") from exc
            else:
                raise JanusError(f"Janus refused to join room {self.room!r}: {exc}") from exc
        self.feed = joined.get("plugindata", {}).get("data", {}).get("id")

    async def _create_room(self) -> None:
        body: dict[str, Any] = {"request": "create", "room": self.room, "description": self.display,
                                "publishers": 4, "videocodec": self.codec, "audiocodec": "opus",
                                "permanent": False}
        if self.pin:
            body["pin"] = self.pin
        try:
            await self._plugin(body)
        except PluginError as exc:
            raise JanusError(f"Janus has no room {self.room!r} and refused to create it ({exc}); create it in "
                             "janus.plugin.videoroom.jcfg") from exc
        log.info("created Janus VideoRoom room %s", self.room)

    async def _open(self, offer: str) -> None:
        await self._connect()
        await self._join()
        try:
            published = await self._plugin({"request": "publish", "display": self.display},
                                           jsep={"type": "offer", "sdp": offer, "trickle": False})
        except PluginError as exc:
            raise JanusError(f"Janus refused our stream in room {self.room!r}: {exc}") from exc
        jsep = published.get("jsep") or {}
        answer = jsep.get("sdp")
        if jsep.get("type") != "answer" or not isinstance(answer, str):
            raise JanusError("Janus's reply to publish has no SDP answer")
        if "m=video 0 " in answer:
            raise JanusError(f"Janus room {self.room!r} does not take {self.codec.upper()} video; set "
                             "webrtc.codec to the room's videocodec (or the room's videocodec to ours)")
        await self._accept(answer)

    async def _close(self) -> None:
        with contextlib.suppress(JanusError, asyncio.CancelledError):
            if self._session is not None and self._ws is not None and not self._ws.closed:
                await self._request("destroy")
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        self._session = self._handle = self.feed = None


class PluginError(Exception):
    """An error the VideoRoom plugin reported (`error_code` in its reply)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason
