"""Talking to a running daemon's HTTP API from the CLI (stdlib only, so commands start fast)."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from bridge.core.errors import UserError


def add_daemon_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the daemon's HTTP address (default: from --config, else http://127.0.0.1:8080)")
    p.add_argument("--config", help="the daemon's config file (for its HTTP address and token)")
    p.add_argument("--token", help="bearer token (default: http.token from the config)")


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    token = getattr(args, "token", None)
    url = getattr(args, "url", None)
    if url is None or token is None:
        from bridge.core.config import load_config

        cfg = load_config(args.config) if getattr(args, "config", None) else load_config()
        host = "127.0.0.1" if cfg.http.host in ("0.0.0.0", "::") else cfg.http.host
        url = url or f"http://{host}:{cfg.http.port}"
        token = token or cfg.http.token
    return url.rstrip("/"), token


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    url, token = _target(args)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            result: dict[str, Any] = json.loads(resp.read() or b"{}")
            return result
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())
            msg = detail.get("error", str(detail))
            fix = detail.get("fix")
        except (ValueError, AttributeError):
            msg, fix = exc.reason, None
        raise UserError(f"the daemon at {url} answered {exc.code}: {msg}" + (f"; {fix}" if fix else "")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"no daemon answers at {url} ({reason}); start one with 'avatar-bridge run' or "
                        "'avatar-bridge demo', or pass --url / --config") from None
