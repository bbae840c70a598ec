"""A WHEP player made of GStreamer's webrtcbin with its defaults (its own RSA certificate, its own cipher
list), for the tests: run by the system Python that has GStreamer's bindings (Debian: python3-gst-1.0,
gir1.2-gst-plugins-bad-1.0, gstreamer1.0-plugins-{base,good,bad}, gstreamer1.0-nice), not by the venv.

    /usr/bin/python3 tests/output/webrtcbin_whep.py http://127.0.0.1:8080/whep --frames 30

Offers recvonly VP8 video + Opus audio (ICE gathered, no trickle), POSTs the offer, applies the answer,
decodes what arrives (the VP8 depayloader asking for a keyframe after a loss, the one setting that is not
webrtcbin's default) and prints one JSON line: decoded video frames and audio buffers, the mean brightness
of the last frame, the connection states it went through and any error. Exits 0 once `--frames` video
frames are decoded, 1 on failure or timeout.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

CAPS = (
    "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000",
)


class Player:
    def __init__(self, url: str, token: str | None, frames: int) -> None:
        self.url, self.token, self.want = url, token, frames
        self.result: dict[str, Any] = {"frames": 0, "audio_buffers": 0, "mean": None, "states": [], "error": None}
        self.loop = GLib.MainLoop()
        self.pipe = Gst.Pipeline.new("whep")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipe.add(self.webrtc)
        for caps in CAPS:
            self.webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                             Gst.Caps.from_string(caps))
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        self.webrtc.connect("pad-added", self.on_pad)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)
        self.offered = False

    def fail(self, message: str) -> None:
        if self.result["error"] is None:
            self.result["error"] = message
        self.loop.quit()

    def on_error(self, _bus: Any, message: Gst.Message) -> None:
        err, debug = message.parse_error()
        self.fail(f"{err.message} ({debug})")

    def on_negotiation_needed(self, _element: Any) -> None:
        promise = Gst.Promise.new_with_change_func(self.on_offer, None)
        self.webrtc.emit("create-offer", None, promise)

    def on_offer(self, promise: Gst.Promise, _data: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None or offer.sdp is None:
            self.fail(f"webrtcbin made no offer ({reply.to_string() if reply is not None else 'no reply'})")
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, *_args: Any) -> None:
        state = self.webrtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.offered:
            self.offered = True
            GLib.idle_add(self.post_offer)

    def post_offer(self) -> bool:
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=sdp.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                answer_text = response.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            self.fail(f"POST {self.url}: {exc}")
            return False
        _, message = GstSdp.SDPMessage.new_from_text(answer_text)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        return False

    def on_connection_state(self, *_args: Any) -> None:
        state = self.webrtc.get_property("connection-state")
        name = state.value_nick
        self.result["states"].append(name)
        if state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self.fail("the peer connection failed (ICE or DTLS)")

    def on_pad(self, _element: Any, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self.on_decoded)
        decode.connect("deep-element-added", self.on_element)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    @staticmethod
    def on_element(_bin: Any, _parent: Any, element: Gst.Element) -> None:
        """The one non-default: after a lost packet the VP8 depayloader asks for a keyframe (an RTCP PLI).
        Without it a loss freezes the picture until the sender's next periodic keyframe."""
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "rtpvp8depay":
            element.set_property("request-keyframe", True)
            element.set_property("wait-for-keyframe", True)

    def on_decoded(self, _decode: Any, pad: Gst.Pad) -> None:
        kind = pad.get_current_caps().get_structure(0).get_name()
        if kind.startswith("video/"):
            chain = "videoconvert ! video/x-raw,format=GRAY8 ! fakesink name=sink signal-handoffs=true sync=false"
        else:
            chain = "audioconvert ! fakesink name=sink signal-handoffs=true sync=false"
        bin_ = Gst.parse_bin_from_description(chain, True)
        self.pipe.add(bin_)
        bin_.sync_state_with_parent()
        bin_.get_by_name("sink").connect("handoff", self.on_video if kind.startswith("video/") else self.on_audio)
        pad.link(bin_.get_static_pad("sink"))

    def on_video(self, _sink: Any, buffer: Gst.Buffer, _pad: Any) -> None:
        self.result["frames"] += 1
        ok, info = buffer.map(Gst.MapFlags.READ)
        if ok:
            self.result["mean"] = sum(info.data) / max(1, len(info.data))
            buffer.unmap(info)
        if self.result["frames"] >= self.want:
            GLib.idle_add(self.loop.quit)

    def on_audio(self, *_args: Any) -> None:
        self.result["audio_buffers"] += 1

    def run(self, timeout: float) -> dict[str, Any]:
        GLib.timeout_add(int(timeout * 1000), lambda: self.fail(f"timed out after {timeout:.0f} s") or False)
        self.pipe.set_state(Gst.State.PLAYING)
        try:
            self.loop.run()
        finally:
            self.pipe.set_state(Gst.State.NULL)
        return self.result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    Gst.init(None)
    result = Player(args.url, args.token, args.frames).run(args.timeout)
    print(json.dumps(result), flush=True)
    return 0 if result["frames"] >= args.frames else 1


if __name__ == "__main__":
    sys.exit(main())
