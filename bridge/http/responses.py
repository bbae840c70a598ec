"""The one way routes answer with an error and read a JSON body: `{"error": what was wrong, "fix": what to do}`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bridge.http import bodies

MAX_MESSAGE = 300  # an error quotes what it refused, but never a whole (possibly huge) request


def _body(message: str, fix: str) -> dict[str, str]:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return {"error": message, "fix": fix}


def error(status: int, message: str, fix: str) -> web.Response:
    """A JSON error response: what was wrong and what to send instead."""
    return web.json_response(_body(message, fix), status=status)


_RAISABLE: dict[int, type[web.HTTPException]] = {400: web.HTTPBadRequest, 404: web.HTTPNotFound,
                                                  408: web.HTTPRequestTimeout, 409: web.HTTPConflict}


def fail(status: int, message: str, fix: str) -> web.HTTPException:
    """The same answer as `error`, as an exception a helper raises out of a handler (400, 404, 408 or 409)."""
    return _RAISABLE[status](text=json.dumps(_body(message, fix)), content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, read within the bounds of `bridge.http.bodies` (size, time, nesting,
    numbers); anything else is answered with 400 and the fix. An empty body is an empty object."""
    try:
        return await bodies.json_object(request)
    except bodies.BodyError as exc:
        raise fail(exc.status, exc.error, exc.fix) from None
