"""OSC control surface: Stream Deck (Bitfocus Companion, OSC plugins), TouchOSC, scripts.

Addresses (prefix ``/avatar``), each with zero or more numeric arguments:
``/avatar/preset/happy`` (fade in), ``/avatar/preset/happy 0.5 [fade_s]``, ``/avatar/emotion/sad [v]``,
``/avatar/blend/jawOpen 0.7``, ``/avatar/gaze x y``, ``/avatar/head pitch yaw roll``, ``/avatar/blink``,
``/avatar/reset``, ``/avatar/flame/expression/3 1.2``, ``/avatar/hold/preset/smile 1|0``,
``/avatar/toggle/emotion/happy``, ``/avatar/release/gaze``, ``/avatar/idle/sway 0.5``;
``/avatar/background office`` (one string: a name from ``avatar.backgrounds``) switches the session's
background.
Queries answered to the sender: ``/avatar/ping`` → ``/avatar/pong``, ``/avatar/get/<target>`` →
``/avatar/value/<target> v...``, ``/avatar/state`` → ``/avatar/state "<json>"``.
Every address also comes as ``/avatar/<session>/…`` for one of the daemon's sessions (the plain form is the
default session); answers then carry the same prefix. A name the daemon does not hold is an unknown address.

UDP (and TCP on the same port: OSC 1.0 length-prefixed or OSC 1.1 SLIP frames). Anything malformed —
truncated packets, wrong types, unknown addresses, NaN/inf, oversized bundles — is counted and ignored;
handling a packet never blocks, so a flood cannot stall the render loop. Each sender has its own packet and
reply budget (`budget.SenderBudgets`), so a flooding sender cannot starve another. The budgets only help if
the other sender's packets reach them: the UDP socket is read here, draining every waiting datagram per
readiness event into a preallocated buffer (asyncio's transport reads one per event, so a flood filled the
kernel's receive buffer and the kernel dropped everyone's packets alike), with a large receive buffer for
bursts; a packet over its sender's budget is dropped before it is copied or parsed. TCP connections are
capped per source address and closed when idle. Binds 127.0.0.1 by default; bound wider, only loopback and
the addresses/networks in ``allow`` may send.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from pythonosc import osc_packet
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.controls.commands import UnknownTarget, canonical_target
from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import ControlEvent, ControlSink, SessionScope
from drivers.control.budget import SenderBudgets

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65_507
MAX_MESSAGES_PER_PACKET = 256
MAX_ARGS = 16
MAX_TCP_FRAME = 65_536
REPLIES_PER_SECOND = 50.0  # per sender
# A Stream Deck sends a few packets per press and a VMC face tracker one bundle per frame (60-120 per second):
# far more than that from one sender is a flood or a bug.
MAX_PACKETS_PER_SECOND = 2000.0
# OSC over TCP: a control surface keeps one or two connections open; an idle one is closed after a while.
TCP_IDLE_TIMEOUT = 60.0
TCP_MAX_PER_SOURCE = 8
TCP_MAX_CONNECTIONS = 64
RECEIVE_BUFFER = 1 << 23  # bytes asked of the kernel for the UDP socket (capped by net.core.rmem_max)
DRAIN_BATCH = 1024  # datagrams read per readiness event before the loop runs its other work

StateFn = Callable[[], dict[str, Any]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(entries: Iterable[str]) -> list[Network]:
    """Addresses or CIDR networks; raises ValueError naming the bad entry."""
    nets: list[Network] = []
    for e in entries:
        try:
            nets.append(ipaddress.ip_network(e.strip(), strict=False))
        except ValueError:
            raise ValueError(f"allow-list entry {e!r} is not an IP address or network (e.g. 192.168.1.20 "
                             "or 192.168.1.0/24)") from None
    return nets


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def numbers(args: Iterable[Any]) -> tuple[float, ...] | None:
    """OSC arguments as finite floats (bools as 0/1, numeric strings parsed); None when any is not."""
    out: list[float] = []
    for a in args:
        if isinstance(a, bool):
            out.append(1.0 if a else 0.0)
        elif isinstance(a, (int, float)):
            out.append(float(a))
        elif isinstance(a, str):
            try:
                out.append(float(a))
            except ValueError:
                return None
        else:
            return None
        if not math.isfinite(out[-1]):
            return None
    return tuple(out)


def _udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to host:port with a large receive buffer; raises OSError."""
    family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):  # FORCE: beyond rmem_max
            if option is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
                    break
                except OSError:
                    continue
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class OscServerBase:
    """UDP/TCP OSC server core: source filtering, parsing, counters, replies; subclasses route messages."""

    name = "osc"

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, allow: Iterable[str] = (), tcp: bool = True,
                 max_packets_per_second: float = MAX_PACKETS_PER_SECOND, tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
                 tcp_max_per_source: int = TCP_MAX_PER_SOURCE) -> None:
        self.host = host
        self.port = port
        self.allow = parse_allow(allow)
        self.tcp = tcp
        self.counters: dict[str, int] = {
            "packets": 0, "messages": 0, "accepted": 0, "malformed": 0, "unknown": 0, "bad_args": 0,
            "denied": 0, "oversized": 0, "replies": 0, "socket_errors": 0, "tcp_connections": 0, "rate_limited": 0,
            "tcp_refused": 0, "tcp_idle_closed": 0, "senders_evicted": 0,
        }
        # Packets beyond a sender's budget are dropped before parsing: a flood must not take the render
        # thread's CPU, nor the budget of the other senders.
        self.max_rate = float(max_packets_per_second)
        self.budgets = SenderBudgets(self.max_rate, REPLIES_PER_SECOND)
        self.tcp_idle_timeout = float(tcp_idle_timeout)
        self.tcp_max_per_source = int(tcp_max_per_source)
        self._tcp_clients: dict[asyncio.StreamWriter, str] = {}
        self._allowed_hosts: dict[str, bool] = {}
        self.last_error = ""
        self._emit: ControlSink | None = None
        self._udp: socket.socket | None = None
        self._buffer = bytearray(MAX_DATAGRAM + 1)  # one datagram at a time, reused; a copy only when admitted
        self._view = memoryview(self._buffer)
        self._tcp_server: asyncio.AbstractServer | None = None
        self.bound: tuple[str, int] | None = None
        if not _is_loopback(host) and not self.allow:
            log.warning("%s: bound to %s but osc allow-list is empty: only this machine may send; "
                        "add the senders' addresses to the allow list", self.name, host)

    # ---- lifecycle -----------------------------------------------------------------------------------
    async def start(self, emit: ControlSink) -> None:
        self._emit = emit
        # With port 0 the system picks a free UDP port, which may be taken for TCP: pick again a few times so
        # both listen on one port.
        for attempt in range(8 if self.port == 0 and self.tcp else 1):
            await self._start_udp()
            if not self.tcp or await self._start_tcp(warn=attempt == 7 or self.port != 0):
                break
            self._close_udp()
        assert self.bound is not None
        log.info("%s: listening on %s:%d", self.name, *self.bound)

    async def _start_udp(self) -> None:
        try:
            sock = _udp_socket(self.host, self.port)
        except OSError as exc:
            raise UserError(f"{self.name}: cannot listen on UDP {self.host}:{self.port}: {exc.strerror or exc}; "
                            "choose another port in the config or stop the program using it") from None
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)
        self._udp = sock
        name = sock.getsockname()
        self.bound = (name[0], name[1])

    async def _start_tcp(self, warn: bool) -> bool:
        assert self.bound is not None
        try:
            self._tcp_server = await asyncio.start_server(self._tcp_client, self.host, self.bound[1])
        except OSError as exc:
            if warn:
                log.warning("%s: TCP on port %d unavailable (%s); UDP only", self.name, self.bound[1], exc)
            return warn
        return True

    def _close_udp(self) -> None:
        if self._udp is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None

    async def stop(self) -> None:
        self._close_udp()
        if self._tcp_server is not None:
            self._tcp_server.close()
            for writer in list(self._tcp_clients):
                writer.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None

    def status(self) -> dict[str, Any]:
        """Counters, the busiest senders with what each had dropped, open TCP clients (for /api/state)."""
        self.counters["senders_evicted"] = self.budgets.evicted
        return {"counters": dict(self.counters), "bound": self.bound, "last_error": self.last_error,
                "senders": self.budgets.busiest(), "tcp_clients": len(self._tcp_clients)}

    # ---- input ---------------------------------------------------------------------------------------
    def allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if ip.is_loopback:
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
            if ip.is_loopback:
                return True
        return any(ip in net for net in self.allow)

    def _drain(self) -> None:
        """Every datagram waiting on the UDP socket (up to DRAIN_BATCH), each admitted or dropped before it is
        copied; never raises."""
        sock, view, held = self._udp, self._view, self.budgets.held
        if sock is None:
            return
        refused = 0
        try:
            for _ in range(DRAIN_BATCH):
                try:
                    size, addr = sock.recvfrom_into(self._buffer)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # an ICMP error for an earlier reply: counted, the next datagram is read
                    self.counters["socket_errors"] += 1
                    continue
                if held(addr if len(addr) == 2 else addr[:2], time.monotonic()):  # over its budget: one lookup
                    refused += 1
                    continue
                sender = self._admit(size, addr)
                if sender is not None:
                    self._handle(bytes(view[:size]), addr, sender, None)
        finally:
            self.counters["packets"] += refused
            self.counters["rate_limited"] += refused

    def _admit(self, size: int, addr: tuple[Any, ...]) -> tuple[str, int] | None:
        """The sender of a `size`-byte packet from `addr` when it is allowed, not oversized and within its
        budget; else None (counted)."""
        self.counters["packets"] += 1
        host = str(addr[0])
        allowed = self._allowed_hosts.get(host)
        if allowed is None:
            allowed = self.allowed(host)
            if len(self._allowed_hosts) < 1024:
                self._allowed_hosts[host] = allowed
        if not allowed:
            self.counters["denied"] += 1
            return None
        if size > MAX_DATAGRAM:
            self.counters["oversized"] += 1
            return None
        sender = (host, addr[1] if len(addr) > 1 else 0)
        if not self.budgets.take(sender):
            self.counters["rate_limited"] += 1
            return None
        return sender

    def handle_datagram(self, data: bytes, addr: tuple[Any, ...], reply: Callable[[bytes], None] | None = None) -> None:
        """One packet: never raises (a bug in a handler is counted, not propagated to the loop)."""
        sender = self._admit(len(data), addr)
        if sender is not None:
            self._handle(data, addr, sender, reply)

    def _handle(self, data: bytes, addr: tuple[Any, ...], sender: tuple[str, int],
                reply: Callable[[bytes], None] | None) -> None:
        try:
            packet = osc_packet.OscPacket(data)
            messages = packet.messages
        except RecursionError:
            self._bad("malformed", "bundle nested too deeply")
            return
        except Exception as exc:
            self._bad("malformed", f"unparseable packet: {str(exc)[:120]}")
            return
        if len(messages) > MAX_MESSAGES_PER_PACKET:
            self.counters["oversized"] += 1
            messages = messages[:MAX_MESSAGES_PER_PACKET]
        out = reply or (lambda p: self._send(p, addr))

        def send(payload: bytes) -> None:
            if self.budgets.take_reply(sender):  # queries cannot be turned into a flood of replies
                out(payload)
                self.counters["replies"] += 1

        for timed in messages:
            self.counters["messages"] += 1
            try:
                msg = timed.message
                params = list(msg.params)
                if len(params) > MAX_ARGS:
                    self._bad("bad_args", f"{msg.address[:80]}: more than {MAX_ARGS} arguments")
                    continue
                self.handle_message(msg.address, params, send)
            except Exception as exc:
                self._bad("malformed", f"{type(exc).__name__}: {str(exc)[:120]}")

    def _bad(self, counter: str, why: str) -> None:
        self.counters[counter] += 1
        self.last_error = why

    def emit(self, target: str, values: tuple[float, ...] = (), session: str = "") -> None:
        if self._emit is not None:
            self._emit(ControlEvent(target, values, source=self.name, time=time.monotonic(), session=session))
            self.counters["accepted"] += 1

    def handle_message(self, address: str, args: list[Any], reply: Callable[[bytes], None]) -> None:
        raise NotImplementedError

    # ---- replies -------------------------------------------------------------------------------------
    def _send(self, payload: bytes, addr: tuple[Any, ...]) -> None:
        if self._udp is not None:
            try:
                self._udp.sendto(payload, addr)
            except OSError:  # the send buffer is full or the peer is gone: a reply is not worth waiting for
                self.counters["socket_errors"] += 1

    def reply(self, send: Callable[[bytes], None], address: str, *args: float | str) -> None:
        """Send a message back through `send` (which holds the sender's reply budget)."""
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        send(b.build().dgram)

    # ---- TCP (OSC 1.0 int32 size prefix, or OSC 1.1 SLIP) ----------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        source = str(peer[0])
        self.counters["tcp_connections"] += 1
        if not self.allowed(source):
            self.counters["denied"] += 1
            writer.close()
            return
        from_source = sum(1 for s in self._tcp_clients.values() if s == source)
        if from_source >= self.tcp_max_per_source or len(self._tcp_clients) >= TCP_MAX_CONNECTIONS:
            self.counters["tcp_refused"] += 1
            self.last_error = f"TCP connection from {source} refused: {from_source} already open from there"
            writer.close()
            return
        self._tcp_clients[writer] = source
        slip: bool | None = None

        def send(payload: bytes) -> None:
            if slip:
                writer.write(b"\xc0" + payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0")
            else:
                writer.write(len(payload).to_bytes(4, "big") + payload)

        async def frame() -> bytes | None:
            """The next frame's payload; None when the peer broke the framing."""
            nonlocal slip
            if slip is None:
                first = await reader.readexactly(1)
                slip = first == b"\xc0"
                if slip:
                    return b""
                head = first + await reader.readexactly(3)
            elif slip:
                body = (await reader.readuntil(b"\xc0"))[:-1]
                return body.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
            else:
                head = await reader.readexactly(4)
            size = int.from_bytes(head, "big")
            if size > MAX_TCP_FRAME:
                self.counters["oversized"] += 1
                return None
            return await reader.readexactly(size)

        try:
            while True:
                try:
                    # The whole frame must arrive within the idle timeout: a peer that trickles is idle too.
                    async with asyncio.timeout(self.tcp_idle_timeout):
                        payload = await frame()
                except TimeoutError:
                    self.counters["tcp_idle_closed"] += 1
                    break
                if payload is None:
                    break
                if payload:
                    self.handle_datagram(payload, peer, send)
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._tcp_clients.pop(writer, None)
            writer.close()


class OscControlSurface(OscServerBase):
    """The `/avatar/...` address scheme (see the module docstring)."""

    name = "osc"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        allow: Iterable[str] = (),
        state: StateFn | None = None,
        prefix: str = "/avatar",
        sessions: SessionScope | None = None,
        tcp: bool = True,
        max_packets_per_second: float = MAX_PACKETS_PER_SECOND,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        tcp_max_per_source: int = TCP_MAX_PER_SOURCE,
    ) -> None:
        super().__init__(host, port, allow, tcp, max_packets_per_second, tcp_idle_timeout, tcp_max_per_source)
        self.state = state
        self.sessions = sessions
        self.prefix = prefix.rstrip("/")

    @classmethod
    def from_config(cls, config: Config, *, state: StateFn | None = None,
                    sessions: SessionScope | None = None) -> OscControlSurface:
        """The [osc] section; `state` answers /avatar/state queries (the default session's mixer state),
        `sessions` the daemon's sessions that `/avatar/<session>/…` addresses."""
        cfg = config.osc
        return cls(cfg.host, cfg.port, cfg.allow, state=state, sessions=sessions,
                   max_packets_per_second=cfg.max_packets_per_second, tcp_idle_timeout=cfg.tcp_idle_timeout_s,
                   tcp_max_per_source=cfg.tcp_max_connections_per_source)

    def _scope(self, target: str) -> tuple[str, str]:
        """(session, the target within it): a first segment the registry holds names a session."""
        head, _, rest = target.partition("/")
        if rest and self.sessions is not None and self.sessions.has_session(head):
            return head, rest
        return "", target

    def handle_message(self, address: str, args: list[Any], reply: Callable[[bytes], None]) -> None:
        if not address.startswith(self.prefix + "/"):
            self._bad("unknown", f"unknown address {address[:80]!r}; use {self.prefix}/...")
            return
        target = address[len(self.prefix) + 1 :]
        if not target or len(target) > 200:
            self._bad("unknown", "empty or overlong address")
            return
        session, target = self._scope(target)
        prefix = f"{self.prefix}/{session}" if session else self.prefix
        if target == "ping":
            self.reply(reply, prefix + "/pong", *[a for a in args if isinstance(a, (int, float, str))][:4])
            return
        if target == "state" or target.startswith("get/"):
            self._answer(session, prefix, target, reply)
            return
        if target == "background":
            self._background(session, args)
            return
        values = numbers(args)
        if values is None:
            self._bad("bad_args", f"{address[:80]}: arguments must be finite numbers")
            return
        self.emit(target, values, session)

    def _background(self, session: str, args: list[Any]) -> None:
        """`/avatar[/<session>]/background NAME`: switch to a configured background (loaded off the loop)."""
        if len(args) != 1 or not isinstance(args[0], str):
            self._bad("bad_args", "/avatar/background takes one string: a name from avatar.backgrounds")
            return
        control = self.sessions.background_control(session) if self.sessions is not None else None
        if control is None or not control.request(args[0][:64]):
            self._bad("unknown", f"no background named {args[0][:40]!r}")
            return
        self.counters["accepted"] += 1

    def _answer(self, session: str, prefix: str, target: str, reply: Callable[[bytes], None]) -> None:
        if session and self.sessions is not None:
            state = self.sessions.control_state(session)
        else:
            state = self.state() if self.state else {}
        if target == "state":
            text = json.dumps({"manual": state.get("manual", {})}, separators=(",", ":"))
            self.reply(reply, prefix + "/state", text[:8000])
            return
        try:  # the state is keyed by canonical names: /avatar/get/blend/JAWOPEN reads blend/jawOpen
            name = canonical_target(target[len("get/") :])
        except UnknownTarget as exc:
            self._bad("unknown", str(exc))
            return
        value = state.get("manual", {}).get(name, 0.0)
        vals = value if isinstance(value, list) else [value]
        self.reply(reply, f"{prefix}/value/{name}", *[float(v) for v in vals])
