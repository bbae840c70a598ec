"""The request policy of the HTTP server: one middleware that decides whether a request may reach a handler.

Any web page the user opens can send requests to 127.0.0.1, and a DNS-rebinding page can even read the
answers. So, before any handler runs:

1. **Host.** The `Host` header must name this daemon: a loopback name or address (`localhost`, `*.localhost`,
   127.0.0.0/8, `[::1]`) with the port it is served on, the address it is bound to (any IP address when bound
   to all interfaces), or an entry of `http.allowed_hosts` (`name` or `name:port`). A rebinding page's requests
   carry the attacker's name and are refused (also for reads like `/api/state`). `/health` is exempt.
2. **Origin.** A state-changing request (POST, PUT, PATCH, DELETE) that carries an `Origin` must come from one
   of the daemon's own origins (`http://` + any accepted host) or from `http.allowed_origins`.
3. **Media type.** Its body must be `application/json` (`application/sdp` for WHEP offers): the types a page
   may send without asking first (text/plain, forms, multipart, none) are refused, so a cross-site request
   can never be a valid one.
4. **Token.** With `http.token` set, everything but `/health`, the static pages and CORS preflights needs
   `Authorization: Bearer <token>`; compared in constant time, never read from URLs, never logged.
5. **CORS** only on WHEP and the viewer API (`/whep`, `/whep/<peer>`, `/api/webrtc/...`, and a session's
   `/sessions/<id>/whep…`) and only for allowed origins, so a third-party WHEP player works once the user lists
   its origin.

Refusals are `403 {"error", "fix"}` (401 for the token) and are counted in the pipeline counters
(`policy/refused_host`, `policy/refused_origin`, `policy/refused_media_type`, `policy/refused_token`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from bridge.core.config import HttpConfig
from bridge.core.http_names import normalise_origin, split_host
from bridge.http import responses

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Counter = Callable[[str], None]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS = frozenset({"/health"})
# Static pages hold no data (every call they make needs the token), so they load without it.
PAGE_PATHS = frozenset({"/", "/panel", "/panel/", "/panel/panel.html", "/panel/panel.js", "/panel/panel.css",
                        "/panel/token.js", "/viewer", "/viewer.js", "/obs", "/obs.js", "/alpha.js"})
CORS_PREFIXES = ("/whep/", "/api/webrtc/")
CORS_METHODS = "GET, POST, DELETE, PATCH, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, If-Match"
CORS_EXPOSE = "Location, ETag, Link, Accept-Post"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
# Defence in depth for every answer: no sniffing, no framing (clickjacking of the panel), no Referer leaks.
SAFETY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback


@dataclass(frozen=True)
class HostRule:
    """Which `Host` values (and so which origins) name this daemon."""

    bound: str = "127.0.0.1"
    allowed: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def of(cls, bound: str, allowed_hosts: Iterable[str]) -> HostRule:
        entries = []
        for entry in allowed_hosts:
            parsed = split_host(entry)
            if parsed is None:
                raise ValueError(f"http.allowed_hosts entry {entry!r} is not a host name or name:port")
            entries.append(parsed)
        return cls(bound.strip().lower().strip("[]"), tuple(entries))

    def accepts(self, host: str, served_port: int) -> bool:
        parsed = split_host(host)
        if parsed is None:
            return False
        name, port = parsed
        port = 80 if port is None else port
        for allowed_name, allowed_port in self.allowed:
            if name == allowed_name and allowed_port in (None, port):
                return True
        if port != served_port:
            return False
        if is_loopback_name(name):
            return True
        if self.bound in WILDCARD_HOSTS:
            return _ip(name) is not None  # an address literal of this machine: no name to rebind
        ip, bound_ip = _ip(name), _ip(self.bound)
        return name == self.bound or (ip is not None and ip == bound_ip)


@dataclass(frozen=True)
class PolicySettings:
    hosts: HostRule = field(default_factory=HostRule)
    allowed_origins: frozenset[str] = frozenset()
    token: str | None = None

    @classmethod
    def from_config(cls, http: HttpConfig) -> PolicySettings:
        """From the `[http]` section (host, allowed_hosts, allowed_origins, token)."""
        # The config holds the origins normalised and the host names checked (bridge.core.http_names).
        return cls(HostRule.of(http.host, http.allowed_hosts), frozenset(http.allowed_origins), http.token)

    def own_origin(self, origin: str, served_port: int) -> bool:
        parts = urlsplit(origin)
        return parts.scheme == "http" and self.hosts.accepts(parts.netloc, served_port)

    def origin_allowed(self, origin: str, served_port: int) -> bool:
        norm = normalise_origin(origin)
        return norm is not None and (norm in self.allowed_origins or self.own_origin(norm, served_port))


_SESSION_WHEP = re.compile(r"^/sessions/[^/]{1,64}(?=/whep(/|$))")
_SESSION_API = re.compile(r"^/api/sessions/[^/]{1,64}(?=/webrtc/)")


def unscoped(path: str) -> str:
    """A session's WHEP and viewer-API paths as the default session's (`/sessions/<id>/whep/…` → `/whep/…`,
    `/api/sessions/<id>/webrtc/…` → `/api/webrtc/…`): the same rules apply to them."""
    return _SESSION_API.sub("/api", _SESSION_WHEP.sub("", path, count=1), count=1)


def expected_media_type(method: str, path: str) -> str:
    path = unscoped(path)
    if path == "/whep" and method == "POST":
        return "application/sdp"
    if path.startswith("/whep/") and method == "PATCH":
        return "application/trickle-ice-sdpfrag"
    return "application/json"


def _digest(text: str) -> bytes:
    """Tokens are compared as digests: constant time, also in their length."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def is_cors_path(path: str) -> bool:
    path = unscoped(path)
    return path == "/whep" or path.startswith(CORS_PREFIXES)


def _served_port(request: web.Request) -> int:
    """The port this connection came in on: the one the daemon is served on, also when it picked a free one."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return int(sockname[1]) if sockname else 0


def request_policy(settings: PolicySettings, count: Counter | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware enforcing `settings` (see the module docstring); `count(name)` tallies refusals."""
    tally = count or (lambda _name: None)
    token_digest = _digest(settings.token) if settings.token else None

    def refused(kind: str, request: web.Request, status: int, error: str, fix: str) -> web.Response:
        tally(f"policy/refused_{kind}")
        log.debug("refused %s %s: %s", request.method, request.path, error)  # never the query or headers
        response = responses.error(status, error, fix)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def check(request: web.Request, port: int, origin: str | None, cors: bool) -> web.StreamResponse | None:
        """A refusal or a preflight answer, or None when the handler may run."""
        path, method = request.path, request.method
        host = request.headers.get("Host")
        if host is not None and not settings.hosts.accepts(host, port):
            return refused("host", request, 403, "the Host header does not name this daemon",
                           f"use http://127.0.0.1:{port}/ or http://localhost:{port}/, or add the name you use "
                           "to http.allowed_hosts")
        if method == "OPTIONS" and origin is not None and "Access-Control-Request-Method" in request.headers:
            if not cors:
                return refused("origin", request, 403, "cross-origin requests to this path are not allowed from "
                               "this origin", "add the page's origin to http.allowed_origins (WHEP and the viewer "
                               "API only)")
            preflight = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": "600"})
            if unscoped(path) == "/whep":
                preflight.headers["Accept-Post"] = "application/sdp"
            return preflight
        if method in STATE_CHANGING:
            if origin is not None and not settings.origin_allowed(origin, port):
                return refused("origin", request, 403, "requests from other origins (web sites) may not change this daemon",
                               "use the daemon's own pages, or add the page's origin to http.allowed_origins")
            want = expected_media_type(method, path)
            given = request.headers.get("Content-Type")
            if (request.body_exists or method != "DELETE") and (given is None or request.content_type != want):
                return refused("media_type", request, 403,
                               f"this request needs Content-Type {want}" + ("; it had none" if given is None else ""),
                               f"send the body as {want} with 'Content-Type: {want}'")
        if token_digest is not None and path not in PAGE_PATHS and method != "OPTIONS":
            given_auth = request.headers.get("Authorization", "")
            supplied = given_auth[7:] if given_auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(_digest(supplied), token_digest):
                return refused("token", request, 401, "missing or wrong bearer token",
                               "send 'Authorization: Bearer <http.token>'")
        return None

    @web.middleware
    async def policy(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        port = _served_port(request)
        origin = request.headers.get("Origin")
        cors = origin is not None and is_cors_path(request.path) and settings.origin_allowed(origin, port)

        def finish(response: web.StreamResponse) -> web.StreamResponse:
            if not response.prepared:
                if is_cors_path(request.path):
                    response.headers["Vary"] = "Origin"
                if cors and origin is not None:
                    response.headers["Access-Control-Allow-Origin"] = origin
                    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
                for key, value in SAFETY_HEADERS.items():
                    response.headers.setdefault(key, value)
            return response

        answer = check(request, port, origin, cors)
        if answer is not None:
            return finish(answer)
        try:
            return finish(await handler(request))
        except web.HTTPException as exc:
            finish(exc)
            raise

    return policy
