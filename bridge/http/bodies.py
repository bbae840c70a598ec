"""Request bodies read within bounds: size, time, UTF-8, JSON nesting depth and numbers.

Every handler reads its body through here, so a 50,000-deep array, a 400-digit integer, `NaN`, a body that
never finishes or one of many megabytes is a 400 with what was wrong and what to send instead, decided before
any handler logic runs, never a RecursionError or OverflowError turned into a 500.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web

from drivers.output.webrtc.offers import MAX_OFFER_BYTES

MAX_JSON_BYTES = 64 * 1024  # the largest JSON body (a WebRTC offer in its JSON envelope fits easily)
MAX_SDP_BYTES = MAX_OFFER_BYTES
MAX_DEPTH = 16  # nesting of arrays and objects; the API's bodies use two levels
MAX_SAFE_INTEGER = 2**53  # what a JavaScript client can send exactly; larger is no count of anything here
READ_TIMEOUT = 10.0  # seconds a client may take to send its body


class BodyError(Exception):
    """A body the API refuses: status 400, what was wrong and what to send instead."""

    def __init__(self, error: str, fix: str, status: int = 400) -> None:
        super().__init__(error)
        self.error, self.fix, self.status = error, fix, status


def _refuse_constant(name: str) -> Any:
    raise BodyError(f"the body contains {name}, which is not a number", "send finite numbers")


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > 16 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise BodyError(f"the integer {text[:24]}{'...' if len(text) > 24 else ''} ({digits} digits) is out of range",
                        f"send numbers within ±{MAX_SAFE_INTEGER}")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"the number {text[:24]} is too large", "send finite numbers (within ±1e308)")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(raw: bytes) -> Any:
    """Bytes to a JSON value within the bounds above; raises BodyError."""
    if len(raw) > MAX_JSON_BYTES:
        raise BodyError(f"the body is {len(raw)} bytes, more than {MAX_JSON_BYTES}", "send a smaller JSON body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"the body is not UTF-8 text (byte {exc.start})", "send JSON encoded as UTF-8") from None
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_refuse_constant)
    except RecursionError:
        raise BodyError("the JSON is nested too deeply", f"send at most {MAX_DEPTH} levels of arrays and objects") from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"the body is not JSON ({exc.msg} at character {exc.pos})",
                        'send a JSON object, e.g. {"target": "blend/jawOpen", "values": [0.7]}') from None
    except ValueError as exc:  # a number int() or float() could not take
        raise BodyError(f"the body has an unusable number ({str(exc)[:80]})", "send finite numbers") from None
    if _depth(value) > MAX_DEPTH:
        raise BodyError("the JSON is nested too deeply", f"send at most {MAX_DEPTH} levels of arrays and objects")
    return value


async def read_bytes(request: web.Request, limit: int) -> bytes:
    """The whole raw body, however it was cut into TCP segments or chunks: read until its end, refused early
    when it says (or turns out) to be larger than `limit`, or when all of it has not come within READ_TIMEOUT."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyError(f"the body is {declared} bytes, more than {limit}", "send a smaller body")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            while size <= limit:
                part = await request.content.read(limit + 1 - size)
                if not part:  # the end of the body (its Content-Length reached, or the last chunk)
                    break
                parts.append(part)
                size += len(part)
    except TimeoutError:
        raise BodyError(f"the body did not arrive within {READ_TIMEOUT:g} s ({size} bytes came)",
                        "send the whole body at once", status=408) from None
    if size > limit:
        raise BodyError(f"the body is more than {limit} bytes", "send a smaller body")
    return b"".join(parts)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object (an empty body is an empty object); raises BodyError."""
    raw = await read_bytes(request, MAX_JSON_BYTES)
    if not raw.strip():
        return {}
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise BodyError(f"the body must be a JSON object, not {type(value).__name__}",
                        'send {...}, e.g. {"target": "blend/jawOpen", "values": [0.7]}')
    return value


def decode_sdp(raw: bytes) -> str:
    """SDP is UTF-8 text (RFC 8866); anything else is refused, not decoded into a traceback."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"the SDP is not UTF-8 text (byte {exc.start})",
                        "send the localDescription.sdp of an RTCPeerConnection as it is") from None


async def sdp_text(request: web.Request) -> str:
    return decode_sdp(await read_bytes(request, MAX_SDP_BYTES))
