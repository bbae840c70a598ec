"""What the HTTP routes find on the application: the daemon, the host of the sessions. Set once by
`app.build_app`; handlers find the session a request is for with `bridge.http.scope.session_of`."""

from __future__ import annotations

from aiohttp import web

from bridge.runtime.daemon import Daemon

HOST_KEY: web.AppKey[Daemon] = web.AppKey("host", Daemon)
