"""What the HTTP routes find on the application: the running daemon as a `MediaHub`, its mixer, its WebRTC
viewers. Set once by `app.build_app`; handlers read them from `request.app`."""

from __future__ import annotations

from aiohttp import web

from bridge.controls.mixer import Mixer
from bridge.core.interfaces import MediaHub
from drivers.output.webrtc.peers import ViewerHub

HUB_KEY: web.AppKey[MediaHub] = web.AppKey("hub", MediaHub)
MIXER_KEY: web.AppKey[Mixer] = web.AppKey("mixer", Mixer)
VIEWERS_KEY: web.AppKey[ViewerHub] = web.AppKey("viewers", ViewerHub)
