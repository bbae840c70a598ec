"""A real Janus (Debian's `janus` package) for the tests: headless, VideoRoom + WebSockets only.

The configuration is written into a temporary folder: every plugin but the VideoRoom and every transport but
WebSockets is disabled, the API listens on 127.0.0.1 only, no STUN or TURN, and the session timeout is
Janus's default (so the publisher's keepalives matter). Media stays on this machine: libnice (Janus) and
aioice (aiortc) never gather loopback candidates, so ICE pairs this machine's own interface addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

JANUS = shutil.which("janus") or "/usr/bin/janus"
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
ROOM = 4242
# Debian ships janus.js (libjs-janus-gateway) and the adapter it needs (libjs-webrtc-adapter).
JANUS_JS = Path("/usr/share/javascript/janus-gateway/janus.js")
ADAPTER_JS = Path("/usr/share/javascript/webrtc-adapter/adapter.js")
KEEP = {"plugins": "libjanus_videoroom.so", "transports": "libjanus_websockets.so"}


def janus_available() -> bool:
    return Path(JANUS).exists()


def _lib_dir() -> Path:
    """Where the plugins live (the multiarch folder differs off x86-64)."""
    found = sorted(Path("/usr/lib").glob("*/janus/plugins/libjanus_videoroom.so*"))
    return found[0].parent.parent if found else LIB


def _disable(folder: Path, keep: str) -> str:
    names = {p.name.split(".so")[0] + ".so" for p in folder.glob("libjanus_*.so*")}
    return ",".join(sorted(n for n in names if n != keep))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, ws_port: int, room: int = ROOM, codec: str = "vp8") -> Path:
    lib = _lib_dir()
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{lib / 'plugins'}"
    transports_folder = "{lib / 'transports'}"
    events_folder = "{lib / 'events'}"
    loggers_folder = "{lib / 'loggers'}"
    debug_level = 4
}}
nat: {{
    ignore_mdns = true
}}
plugins: {{ disable = "{_disable(lib / 'plugins', KEEP['plugins'])}" }}
transports: {{ disable = "{_disable(lib / 'transports', KEEP['transports'])}" }}
loggers: {{ disable = "{_disable(lib / 'loggers', '')}" }}
events: {{ broadcast = false }}
""")
    (folder / "janus.transport.websockets.jcfg").write_text(f"""general: {{
    json = "plain"
    ws = true
    ws_port = {ws_port}
    ws_ip = "127.0.0.1"
    wss = false
}}
admin: {{ admin_ws = false admin_wss = false }}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text(f"""general: {{ }}
room-{room}: {{
    description = "Avatar Bridge test"
    publishers = 8
    videocodec = "{codec}"
    audiocodec = "opus"
}}
""")
    return folder / "janus.jcfg"


@dataclass
class Janus:
    url: str
    room: int
    log: Path
    proc: asyncio.subprocess.Process

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One VideoRoom request on a session of its own (e.g. listparticipants), returning the plugin's data."""
        async with aiohttp.ClientSession() as http, http.ws_connect(self.url, protocols=("janus-protocol",)) as ws:
            async def call(message: dict[str, Any]) -> dict[str, Any]:
                await ws.send_str(json.dumps({**message, "transaction": "t"}))
                while True:
                    reply = json.loads((await ws.receive(timeout=10)).data)
                    if reply.get("janus") != "ack":
                        return dict(reply)

            session = (await call({"janus": "create"}))["data"]["id"]
            handle = (await call({"janus": "attach", "session_id": session, "plugin": "janus.plugin.videoroom"}))
            reply = await call({"janus": "message", "session_id": session, "handle_id": handle["data"]["id"],
                                "body": body})
            await call({"janus": "destroy", "session_id": session})
            return dict(reply["plugindata"]["data"])


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(url, protocols=("janus-protocol",), timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
            await ws.send_str(json.dumps({"janus": "info", "transaction": "ready"}))
            reply = json.loads((await ws.receive(timeout=5)).data)
            return bool(reply.get("janus") == "server_info")
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, TypeError):
        return False


@contextlib.asynccontextmanager
async def running_janus(folder: Path, codec: str = "vp8") -> AsyncIterator[Janus]:
    """Start Janus with a configuration written into `folder`; wait until its API answers; stop it."""
    port = _free_port()
    config = write_config(folder, port, codec=codec)
    log = folder / "janus.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(JANUS, "-C", str(config), "-F", str(folder), "-o",
                                                    stdout=out, stderr=asyncio.subprocess.STDOUT,
                                                    stdin=asyncio.subprocess.DEVNULL)
    janus = Janus(f"ws://127.0.0.1:{port}", ROOM, log, proc)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not await _answers(janus.url):
            if proc.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"Janus did not start (exit {proc.returncode}):\n{janus.log_tail()}")
            await asyncio.sleep(0.2)
        yield janus
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
