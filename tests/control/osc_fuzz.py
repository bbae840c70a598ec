"""Hostile OSC traffic for the fuzz tests: random bytes, truncated messages, NaN/inf and huge values, wrong
types, unknown addresses, oversized and deeply nested or lying bundles. Also runnable as a sender process:
``python -m tests.control.osc_fuzz PORT COUNT SEED`` blasts COUNT packets at 127.0.0.1:PORT over UDP."""

from __future__ import annotations

import contextlib
import math
import random
import socket
import struct
import sys
import time

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder


def random_message(rng: random.Random) -> bytes:
    addr = rng.choice([
        "/avatar/blend/jawOpen", "/avatar/blend/" + "x" * rng.randint(1, 300), "/avatar/gaze", "/avatar/preset/smile",
        "/avatar/emotion/happy", "/avatar/flame/expression/" + str(rng.randint(-5, 200)), "/avatar/blink",
        "/avatar/reset", "/avatar/hold/preset/smile", "/nope", "/avatar/", "/avatar/get/gaze", "/VMC/Ext/Blend/Val",
        "/avatar/idle/sway", "/avatar/toggle/blend/jawOpen", "/avatar/release/gaze",
    ])
    b = OscMessageBuilder(addr)
    for _ in range(rng.randint(0, 20 if rng.random() < 0.05 else 3)):
        kind = rng.random()
        if kind < 0.4:
            b.add_arg(rng.choice([math.nan, math.inf, -math.inf, 1e38, -1e38, rng.uniform(-5, 5)]), "f")
        elif kind < 0.6:
            b.add_arg(rng.randint(-(2**31), 2**31 - 1), "i")
        elif kind < 0.7:
            b.add_arg("s" * rng.randint(0, 50), "s")
        elif kind < 0.8:
            b.add_arg(bytes(rng.randint(1, 40)), "b")
        elif kind < 0.9:
            b.add_arg(rng.random() < 0.5)
        else:
            b.add_arg(rng.uniform(-1e300, 1e300), "d")
    return b.build().dgram


def random_packet(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.25:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    if r < 0.45:
        m = random_message(rng)
        return m[: rng.randint(0, len(m))]  # truncated
    if r < 0.5:
        b = OscBundleBuilder(IMMEDIATELY)
        for _ in range(rng.randint(1, 30)):
            b.add_content(OscMessageBuilder("/avatar/blend/jawOpen").build())  # type: ignore[arg-type]
        data = b.build().dgram
        return data[:-3] if rng.random() < 0.3 else data
    if r < 0.52:  # bundle lying about element sizes
        return b"#bundle\x00" + bytes(8) + struct.pack(">i", rng.choice([-1, 2**31 - 1, 1000])) + bytes(rng.randint(0, 40))
    return random_message(rng)


def huge_bundle() -> bytes:
    b = OscBundleBuilder(IMMEDIATELY)
    m = OscMessageBuilder("/avatar/gaze")
    m.add_arg(0.1)
    m.add_arg(0.1)
    built = m.build()
    for _ in range(1500):  # about 60 KB
        b.add_content(built)  # type: ignore[arg-type]
    return b.build().dgram


def deep_bundle(depth: int = 2000) -> bytes:
    inner = OscMessageBuilder("/avatar/blink").build().dgram
    for _ in range(depth):
        inner = b"#bundle\x00" + bytes(7) + b"\x01" + struct.pack(">i", len(inner)) + inner
    return inner


def blast(port: int, count: int, seed: int, pool_size: int = 4000, sockets: int = 1, pause: bool = True) -> int:
    """Send `count` packets from a pool of hostile ones (a huge and a deep bundle every 5000), in turn from
    `sockets` source ports; `pause` sleeps 1 ms every 64 packets (a fast network), without it the sender blasts
    as fast as it can. Returns how many were sent."""
    rng = random.Random(seed)
    pool = [random_packet(rng) for _ in range(pool_size)]
    special = [huge_bundle(), deep_bundle()]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    sent = 0
    for i in range(count):
        data = special[(i // 5000) % 2] if i % 5000 == 0 else pool[rng.randrange(pool_size)]
        with contextlib.suppress(OSError):
            socks[i % sockets].sendto(data, ("127.0.0.1", port))
        sent += 1
        if pause and i % 64 == 0:
            time.sleep(0.001)  # a fast network, not an infinitely fast one
    for sock in socks:
        sock.close()
    return sent


if __name__ == "__main__":
    # PORT COUNT SEED [SOCKETS [blast]]
    n = blast(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sockets=int(sys.argv[4]) if len(sys.argv) > 4 else 1,
              pause=not (len(sys.argv) > 5 and sys.argv[5] == "blast"))
    print(n)
