"""The one way routes answer with an error and read a JSON body: `{"error": what was wrong, "fix": what to do}`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def error(status: int, message: str, fix: str = "") -> web.Response:
    """A JSON error response; `fix` says what to send instead (omitted when there is nothing to add)."""
    body = {"error": message}
    if fix:
        body["fix"] = fix
    return web.json_response(body, status=status)


_RAISABLE: dict[int, type[web.HTTPException]] = {400: web.HTTPBadRequest, 404: web.HTTPNotFound,
                                                  409: web.HTTPConflict}


def fail(status: int, message: str, fix: str = "") -> web.HTTPException:
    """The same answer as `error`, as an exception a helper raises out of a handler (400, 404 or 409)."""
    body = {"error": message, **({"fix": fix} if fix else {})}
    return _RAISABLE[status](text=json.dumps(body), content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; anything else is answered with 400 and the fix."""
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise fail(400, "the body is not JSON", "send a JSON object with Content-Type: application/json") from None
    if not isinstance(data, dict):
        raise fail(400, "the body must be a JSON object", "send {...}")
    return data
