"""The daemon's one aiohttp server: panel, JSON API, WebRTC signaling (JSON offer/answer and WHEP), metrics."""
