"""The WHIP publisher against a minimal WHIP server written here (aiohttp + its own aiortc peer): bearer token,
201 + Location, media arriving, retry with backoff after a refusal, republish after the server drops the
session, and DELETE on stop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from drivers.output.webrtc.whip import WhipPublisher
from tests.output.conftest import first_error, running_daemon, wait_until


class WhipServer:
    def __init__(self, token: str, refuse_first: int = 0) -> None:
        self.token = token
        self.refuse = refuse_first
        self.posts = 0
        self.deleted: list[str] = []
        self.peers: dict[str, RTCPeerConnection] = {}
        self.frames: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.app = web.Application()
        self.app.router.add_post("/whip/live", self.post)
        self.app.router.add_delete("/whip/session/{id}", self.delete)

    async def post(self, request: web.Request) -> web.Response:
        self.posts += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        if self.refuse > 0:
            self.refuse -= 1
            return web.Response(status=503, text="busy")
        assert request.content_type == "application/sdp"
        pc = RTCPeerConnection()
        sid = str(self.posts)
        self.peers[sid] = pc
        self.frames[sid] = 0

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def read() -> None:
                with contextlib.suppress(MediaStreamError):
                    while True:
                        await track.recv()
                        if track.kind == "video":
                            self.frames[sid] += 1

            self.tasks.append(asyncio.get_running_loop().create_task(read()))

        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whip/session/{sid}"})

    async def delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        self.deleted.append(sid)
        pc = self.peers.pop(sid, None)
        if pc is not None:
            await pc.close()
        return web.Response(status=200)

    async def close(self) -> None:
        for pc in self.peers.values():
            await pc.close()
        for task in self.tasks:
            task.cancel()


async def test_whip_publish_retry_republish_and_delete() -> None:
    server = WhipServer("t0ken", refuse_first=1)
    runner = web.AppRunner(server.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/whip/live"
    try:
        async with running_daemon() as daemon:
            publisher = WhipPublisher(daemon, url, token="t0ken", backoff=(0.2, 1.0))
            publisher.start()
            try:
                await wait_until(lambda: server.frames.get("2", 0) >= 10, 30, "frames at the WHIP server")
                assert publisher.sessions == 1 and server.posts == 2  # one 503, then published
                assert publisher.location == f"http://127.0.0.1:{port}/whip/session/2"
                await wait_until(lambda: publisher.state == "publishing", 10, "publishing state")
                # The server drops the session: the publisher notices and publishes again.
                await server.peers["2"].close()
                await wait_until(lambda: publisher.sessions == 2, 40, "a second session")
                await wait_until(lambda: server.frames.get(str(server.posts), 0) >= 5, 20, "frames again")
            finally:
                await publisher.stop()
            assert str(server.posts) in server.deleted, "no DELETE of the session on stop"
            assert publisher.state == "stopped"

            assert "token" in await first_error(WhipPublisher(daemon, url, token="nope", backoff=(0.2, 0.5)))
    finally:
        await server.close()
        await runner.cleanup()
