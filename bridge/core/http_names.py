"""Host and Origin values as the HTTP request policy compares them: parsed here, below the config, so the
config checks its allowed hosts and origins with the same rules the policy applies to requests. Also the
client behind a remote address, as per-address caps count clients (`address_group`)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def split_host(value: str) -> tuple[str, int | None] | None:
    """`name`, `name:port`, `[v6]` or `[v6]:port` → (lower-case name without brackets, port); None if malformed."""
    value = value.strip()
    if not value or any(c.isspace() or c in "/\\@?#" for c in value):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:  # a bare IPv6 address
        name, port_text = value, None
    else:
        name, port_text = value, None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        return name.lower().rstrip("."), int(port_text)
    return name.lower().rstrip("."), None


def normalise_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case with the scheme's default port dropped; None for opaque origins."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 80 if parts.scheme == "http" else 443
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def address_group(address: str) -> str:
    """The client a per-address cap counts for `address`: the whole loopback range is one client (any local
    process may send from 127.0.0.2, .3, ... or ::1), one IPv6 /64 is one (a host picks addresses within its
    /64 at will), an IPv4-mapped IPv6 address is its IPv4 address; anything else is itself."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
