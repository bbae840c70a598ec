"""Every session publishes into Janus as its own feed (a real Janus, Debian's package, started here): how
sessions of many hosts reach viewers that only ever talk to Janus. Ending a session takes its feed out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import needs_program
from tests.output.janus_server import Janus, janus_available, running_janus
from tests.output.test_janus import publishers_in
from tests.sessions.test_sessions_api import Api, sessions_daemon

pytestmark = needs_program("janus", "janus", found=janus_available())


@pytest.fixture
async def janus(tmp_path: Path) -> AsyncIterator[Janus]:
    async with running_janus(tmp_path) as server:
        yield server


async def until_feeds(janus: Janus, wanted: set[str], timeout: float = 60.0) -> None:
    """Until the room's publishers are exactly the feeds displayed as `wanted`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (seen := {str(p.get("display")) for p in await publishers_in(janus, janus.room)}) != wanted:
        assert loop.time() < end, f"the room has {seen}, not {wanted}"
        await asyncio.sleep(0.1)


async def test_each_session_is_its_own_feed_in_the_janus_room(janus: Janus) -> None:
    async with sessions_daemon(webrtc={"janus": {"url": janus.url, "room": janus.room, "display": "studio"}},
                               sessions={"max": 3}) as daemon, aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        first, second = await api.create(), await api.create()
        await until_feeds(janus, {"studio", f"studio {first}", f"studio {second}"})
        status, body, _ = await api.call("GET", f"/api/sessions/{first}/webrtc/viewers")
        assert status == 200 and body["janus"]["state"] == "publishing" and body["janus"]["feed"], body

        status, _, _ = await api.call("DELETE", f"/api/sessions/{first}")
        assert status == 200
        await until_feeds(janus, {"studio", f"studio {second}"})
