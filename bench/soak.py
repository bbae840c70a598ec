"""Soak test of the demo daemon under steady outside traffic: does it leak memory, descriptors or threads, or stall?

    python bench/soak.py [--minutes 30] [--size 128x128] [--viewer-every 5] [--viewer-life 10]
                         [--osc-rate 50] [--http-rate 10] [--vanish-every 30]

Starts `avatar-bridge run` on the demo head and demo speech (loopback, free ports) in its own process and,
for the whole run, at the stated rates:
- viewer churn: a new aiortc WHEP viewer every `--viewer-every` s that watches for `--viewer-life` s, then
  hangs up (DELETE of its Location) — about life/every viewers at once; every `--vanish-every` s an offer
  whose peer vanishes (never takes the answer), which the daemon must reap;
- OSC: `--osc-rate` control messages per second over UDP (values, presets, case variants of real names,
  unknown names) and one ping per second;
- HTTP: `--http-rate` requests per second (status, state, controls, health, a control change);
- one viewer that stays for the whole run and measures the longest gap between video frames it receives.

Every minute it prints the daemon's RSS, open descriptors and threads (FFmpeg's native ones included: the
demo speech loops every 13 s, and a decoder left open per round shows here), the longest frame gap at the watching viewer,
the frames the daemon dropped that minute and the frames that viewer received, the render stage's median
time (a renderer slower than the frame period drops frames whatever else happens), and the traffic sent. At the end it checks the goals: RSS growth
< 5 % after the first 5 minutes, no frame gap > 0.5 s, descriptors and threads flat (within a few of the
5-minute mark, or of the middle of a shorter run).
Not a test: it runs for half an hour and uses the CPU of a small machine fully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from pythonosc.osc_message_builder import OscMessageBuilder

REPO = Path(__file__).resolve().parents[1]
READY = re.compile(r"running: .* http://[^:]+:(\d+)/")
NAMES = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "browInnerUp", "eyeBlinkLeft", "mouthPucker", "cheekPuff")


@dataclass
class Traffic:
    viewers: int = 0
    viewer_failures: int = 0
    vanished: int = 0
    osc: int = 0
    pongs: int = 0
    http_ok: int = 0
    http_errors: int = 0


@dataclass
class Watch:
    """The long-lived viewer: frame arrival times, reduced to the longest gap per minute."""

    last: float | None = None
    gap_max: float = 0.0
    frames: int = 0

    def arrived(self, now: float) -> None:
        if self.last is not None:
            self.gap_max = max(self.gap_max, now - self.last)
        self.last = now
        self.frames += 1

    def take(self, now: float) -> float:
        """The longest gap since the last call (a gap still open counts up to now)."""
        gap = max(self.gap_max, now - self.last if self.last is not None else 0.0)
        self.gap_max = 0.0
        return gap


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    osc_port: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))


def start_daemon(tmp: Path, size: tuple[int, int]) -> Daemon:
    import tomli_w

    config = {
        "video": {"width": size[0], "height": size[1], "fps": 25},
        "audio": {"source": "file", "loop": True, "realtime": True},
        "http": {"host": "127.0.0.1", "port": 0},
        # Every session comes from loopback here: the per-address cap must leave room for all of them.
        "webrtc": {"max_viewers": 8, "max_sessions_per_address": 8, "connect_timeout_s": 10.0},
        "osc": {"port": 0},
        "vmc": {"enabled": False},
        "midi": {"enabled": False},
    }
    path = tmp / "soak.toml"
    path.write_text(tomli_w.dumps(config))
    log = tmp / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(path)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    daemon = Daemon(proc, log)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        m = READY.search(log.read_text(errors="replace"))
        if m:
            daemon.port = int(m.group(1))
            return daemon
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    raise SystemExit("the daemon did not start within 120 s")


async def connect_viewer(daemon: Daemon, http: aiohttp.ClientSession, on_frame: Any = None,
                         vanish: bool = False) -> tuple[RTCPeerConnection, str | None, list[asyncio.Task[None]]]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if on_frame is not None and track.kind == "video":
                    on_frame(time.monotonic())

    @pc.on("track")
    def on_track(track: Any) -> None:
        tasks.append(asyncio.get_running_loop().create_task(consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(daemon.url + "/whep", data=pc.localDescription.sdp,
                         headers={"Content-Type": "application/sdp"}) as r:
        if r.status != 201:
            await pc.close()
            raise RuntimeError(f"WHEP answered {r.status}: {(await r.text())[:200]}")
        location = r.headers["Location"]
        answer = await r.text()
    if vanish:  # the peer goes away without ever connecting: the daemon must reap its session
        await pc.close()
        return pc, None, tasks
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, location, tasks


async def hang_up(daemon: Daemon, http: aiohttp.ClientSession, pc: RTCPeerConnection, location: str | None,
                  tasks: list[asyncio.Task[None]]) -> None:
    if location is not None:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.delete(daemon.url + location):
                pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pc.close()


async def churn(daemon: Daemon, traffic: Traffic, every: float, life: float, vanish_every: float) -> None:
    async with aiohttp.ClientSession() as http:
        live: set[asyncio.Task[None]] = set()

        async def one() -> None:
            try:
                pc, location, tasks = await connect_viewer(daemon, http)
            except Exception:
                traffic.viewer_failures += 1
                return
            traffic.viewers += 1
            await asyncio.sleep(life)
            await hang_up(daemon, http, pc, location, tasks)

        next_vanish = time.monotonic() + vanish_every
        while True:
            task = asyncio.get_running_loop().create_task(one())
            live.add(task)
            task.add_done_callback(live.discard)
            if time.monotonic() >= next_vanish:
                next_vanish += vanish_every
                with contextlib.suppress(Exception):
                    await connect_viewer(daemon, http, vanish=True)
                    traffic.vanished += 1
            await asyncio.sleep(every)


async def osc_traffic(daemon: Daemon, traffic: Traffic, rate: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    rng = random.Random(3)
    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), lambda: _count_pong(sock, traffic))
    tick = 0
    try:
        while True:
            kind = rng.random()
            if kind < 0.5:
                name = rng.choice(NAMES)
                addr = "/avatar/blend/" + "".join(c.upper() if rng.random() < 0.3 else c for c in name)
                args: list[float] = [rng.random(), 0.2]
            elif kind < 0.7:
                addr, args = "/avatar/preset/" + rng.choice(("smile", "happy", "frown")), [rng.random()]
            elif kind < 0.8:
                addr, args = "/avatar/gaze", [rng.uniform(-1, 1), rng.uniform(-1, 1)]
            elif kind < 0.9:
                addr, args = f"/avatar/blend/unknown{rng.randrange(10_000)}", [0.5]
            else:
                addr, args = "/avatar/reset", [0.3]
            b = OscMessageBuilder(addr)
            for a in args:
                b.add_arg(a)
            with contextlib.suppress(OSError):
                sock.sendto(b.build().dgram, ("127.0.0.1", daemon.osc_port))
            traffic.osc += 1
            tick += 1
            if tick % max(1, int(rate)) == 0:
                with contextlib.suppress(OSError):
                    sock.sendto(OscMessageBuilder("/avatar/ping").build().dgram, ("127.0.0.1", daemon.osc_port))
            await asyncio.sleep(1.0 / rate)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


def _count_pong(sock: socket.socket, traffic: Traffic) -> None:
    with contextlib.suppress(OSError):
        while True:
            if sock.recv(2048).startswith(b"/avatar/pong"):
                traffic.pongs += 1


async def http_traffic(daemon: Daemon, traffic: Traffic, rate: float) -> None:
    rng = random.Random(5)
    requests = [("GET", "/api/status", None), ("GET", "/api/state", None), ("GET", "/health", None),
                ("GET", "/api/controls", None), ("GET", "/api/webrtc/viewers", None),
                ("POST", "/api/control", {"target": "blend/jawOpen", "values": [0.3, 0.2]}),
                ("POST", "/api/control", {"target": "release/blend/jawOpen", "values": [0.2]})]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while True:
            method, path, body = rng.choice(requests)
            try:
                async with http.request(method, daemon.url + path, json=body) as r:
                    await r.read()
                    if r.status < 400:
                        traffic.http_ok += 1
                    else:
                        traffic.http_errors += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                traffic.http_errors += 1
            await asyncio.sleep(1.0 / rate)


async def status(daemon: Daemon) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http, \
            http.get(daemon.url + "/api/status") as r:
        return await r.json()  # type: ignore[no-any-return]


async def soak(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="avatar-bridge-soak-"))
    daemon = start_daemon(tmp, args.size)
    try:
        async with aiohttp.ClientSession() as http, http.get(daemon.url + "/api/state") as r:
            daemon.osc_port = int((await r.json())["surfaces"]["osc"]["bound"][1])
        watch = Watch()
        async with aiohttp.ClientSession() as http:
            pc, location, tasks = await connect_viewer(daemon, http, on_frame=watch.arrived)
        traffic = Traffic()
        loads = [asyncio.get_running_loop().create_task(coro) for coro in (
            churn(daemon, traffic, args.viewer_every, args.viewer_life, args.vanish_every),
            osc_traffic(daemon, traffic, args.osc_rate),
            http_traffic(daemon, traffic, args.http_rate),
        )]
        print(f"soak: demo daemon {args.size[0]}x{args.size[1]} pid {daemon.proc.pid}, {args.minutes:g} min; "
              f"a viewer every {args.viewer_every:g} s for {args.viewer_life:g} s, a vanishing offer every "
              f"{args.vanish_every:g} s, OSC {args.osc_rate:g}/s + 1 ping/s, HTTP {args.http_rate:g}/s", flush=True)
        print(f"{'min':>4} {'RSS MB':>8} {'fds':>5} {'threads':>7} {'gap max s':>10} {'dropped':>8} {'frames':>7} {'render ms':>9} "
              f"{'viewers':>8} "
              f"{'fail':>5} {'vanish':>7} {'osc':>7} {'pongs':>6} {'http ok':>8} {'http err':>8}", flush=True)
        first = await status(daemon)
        dropped_before, frames_before = int(first["dropped"]), watch.frames
        rows: list[dict[str, Any]] = []
        start = time.monotonic()
        for minute in range(1, math.ceil(args.minutes) + 1):
            await asyncio.sleep(max(0.0, start + 60.0 * minute - time.monotonic()))
            if daemon.proc.poll() is not None:
                print(f"the daemon exited with {daemon.proc.returncode}", flush=True)
                return 1
            snap = await status(daemon)
            row = {"minute": minute, "rss": daemon.rss_mb(), "fds": daemon.fds(), "threads": daemon.threads(),
                   "gap": watch.take(time.monotonic()), "dropped": int(snap["dropped"]) - dropped_before,
                   "frames": watch.frames - frames_before,
                   "render_p50": float(snap["stages"].get("render", {}).get("p50_ms", float("nan")))}
            dropped_before, frames_before = int(snap["dropped"]), watch.frames
            rows.append(row)
            print(f"{minute:>4} {row['rss']:>8.1f} {row['fds']:>5} {row['threads']:>7} {row['gap']:>10.3f} {row['dropped']:>8} "
                  f"{row['frames']:>7} {row['render_p50']:>9.1f} {traffic.viewers:>8} {traffic.viewer_failures:>5} {traffic.vanished:>7} "
                  f"{traffic.osc:>7} {traffic.pongs:>6} {traffic.http_ok:>8} {traffic.http_errors:>8}", flush=True)
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        async with aiohttp.ClientSession() as http:
            await hang_up(daemon, http, pc, location, tasks)
        return report(rows)
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(30)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()


def report(rows: list[dict[str, Any]]) -> int:
    warmup = min(5, max(1, len(rows) // 2))  # the first 5 minutes, or the first half of a shorter run
    after = [r for r in rows if r["minute"] >= warmup] or rows
    base = after[0]
    growth = (after[-1]["rss"] - base["rss"]) / base["rss"] * 100.0
    fds = [r["fds"] for r in after]
    threads = [r["threads"] for r in after]
    gap = max(r["gap"] for r in rows)
    checks = [
        (f"RSS growth after minute {base['minute']}: {growth:+.2f} % (goal < 5 %)", growth < 5.0),
        (f"longest frame gap: {gap:.3f} s (goal <= 0.5 s)", gap <= 0.5),
        (f"descriptors after minute {base['minute']}: {min(fds)}..{max(fds)} (goal: flat, within 8)",
         max(fds) - min(fds) <= 8),
        (f"threads after minute {base['minute']}: {min(threads)}..{max(threads)} (goal: flat, within 6)",
         max(threads) - min(threads) <= 6),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}", flush=True)
    print(json.dumps({"rows": rows}), file=sys.stderr)
    return 0 if all(ok for _, ok in checks) else 1


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--size", type=parse_size, default=(128, 128), help="WxH of the demo daemon (default 128x128)")
    p.add_argument("--viewer-every", type=float, default=5.0, help="seconds between new viewers")
    p.add_argument("--viewer-life", type=float, default=10.0, help="seconds each churning viewer watches")
    p.add_argument("--vanish-every", type=float, default=30.0, help="seconds between offers whose peer vanishes")
    p.add_argument("--osc-rate", type=float, default=50.0, help="OSC control messages per second")
    p.add_argument("--http-rate", type=float, default=10.0, help="HTTP requests per second")
    return asyncio.run(soak(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
