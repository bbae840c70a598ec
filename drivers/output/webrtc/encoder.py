"""One video encoder shared by every WebRTC viewer that wants the same stream (codec, packed alpha or not,
bitrate tier): each rendered frame is encoded once, on this encoder's own thread, and the encoded frame is
handed to every subscriber. aiortc sends a track whose `recv()` returns `av.Packet`s without encoding again
(its sender only packetizes them), so the cost of a viewer is packetizing and encrypting, not encoding.

Latest frame wins: the encoder takes the newest rendered frame (a slow encode skips frames, it never queues
latency) and each subscriber has a small latest-wins queue of encoded frames. A subscriber that lost a frame
cannot decode what follows until the next keyframe (`seq` shows the gap); it asks for one.

Keyframes are forced when a subscriber joins, when a receiver reports picture loss (PLI/FIR) and after a
gap, but at most one per `min_keyframe_gap` seconds: a request inside that window waits for its end (or for
a natural keyframe), so a burst of new viewers or of PLIs costs one keyframe, not one each.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from bridge.core.fanout import Broadcast, Subscription
from bridge.core.interfaces import VideoFrame
from drivers.output.webrtc.encoder_thread import EncoderThread
from drivers.output.webrtc.packed_alpha import pack_i420

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
SUBSCRIBER_QUEUE = 3  # encoded frames a viewer may fall behind before it loses one (and waits for a keyframe)
KEYFRAME_INTERVAL_S = 10.0  # a natural keyframe this often, for receivers that never send PLI
MIN_KEYFRAME_GAP_S = 0.5
RATE_WINDOW_S = 2.0


def media_to_ticks(media_time: float, rate: int) -> int:
    """Media-clock seconds to RTP ticks since media time 0 (the encoder's pts and every viewer's timestamps)."""
    return int(round(media_time * rate))


@dataclass(frozen=True)
class EncodedVideo:
    """One encoded frame: `media_time` is the rendered frame's presentation time on the media clock."""

    data: bytes
    media_time: float
    keyframe: bool
    seq: int  # 0, 1, 2... per encoder: a subscriber that sees a jump lost frames
    audio_time: float | None = None
    rendered_at: float = 0.0  # media-clock time the renderer delivered the frame


class SharedI420:
    """Converts each rendered frame's colour to I420 once, and packs it with its alpha once, whatever the number
    of encoders (keyed by the frame's index)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: int | None = None
        self._planes: dict[bool, NDArray[np.uint8]] = {}  # the current frame's planes, without and with alpha
        self.conversions = 0

    def get(self, frame: VideoFrame, alpha: bool = False) -> NDArray[np.uint8]:
        """The frame's I420 planes; with `alpha`, packed with its alpha (packed_alpha.pack_i420)."""
        with self._lock:
            if self._index == frame.index and alpha in self._planes:
                return self._planes[alpha]
        if alpha:  # the avatar alone (over black) with its alpha, not the picture with its background
            colour = self.get(frame) if frame.foreground is None else _to_i420(frame.foreground)
            planes = pack_i420(colour, frame.alpha, frame.width, frame.height)
        else:
            planes = _to_i420(frame.rgb)
        with self._lock:
            if self._index != frame.index:
                self._index, self._planes = frame.index, {}
            self._planes[alpha] = planes
            self.conversions += not alpha
        return planes


def _to_i420(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    converted = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[..., :3]), format="rgb24").reformat(format="yuv420p")
    return np.asarray(converted.to_ndarray(), np.uint8)


def _threads_for(pixels: int) -> int:
    """Encoder threads: one for small frames (threads cost more than they save there), more for HD."""
    wanted = 1 if pixels < 640 * 480 else 2 if pixels <= 1280 * 1456 else 4
    return max(1, min(wanted, os.cpu_count() or 1))


def _h264_level(width: int, height: int) -> str:
    """The lowest of the levels browsers know that admits the frame size (macroblocks per frame)."""
    macroblocks = -(-width // 16) * -(-height // 16)
    return "31" if macroblocks <= 3600 else "40" if macroblocks <= 8192 else "51"


def open_codec(codec: str, width: int, height: int, fps: int, bitrate: int) -> Any:
    """A real-time encoder context: no lookahead and no B-frames (every frame leaves as soon as it is encoded),
    constant bitrate with a one-second buffer, a natural keyframe every KEYFRAME_INTERVAL_S."""
    if codec == "vp8":
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.options = {
            "deadline": "realtime",
            "cpu-used": "-6",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
            "undershoot-pct": "100",
            "overshoot-pct": "15",
            "static-thresh": "1",
            "noise-sensitivity": "4",
        }
        ctx.qmin, ctx.qmax = 2, 56
    elif codec == "h264":
        ctx = av.CodecContext.create("libx264", "w")
        ctx.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "level": _h264_level(width, height),
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
        }
        ctx.profile = "Baseline"  # what every browser decodes (profile-level-id 42e0..)
    else:
        raise ValueError(f"unknown codec {codec!r}; use vp8 or h264")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = VIDEO_TIME_BASE
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = int(KEYFRAME_INTERVAL_S * fps)
    ctx.thread_count = _threads_for(width * height)
    return ctx


class VideoEncoder(EncoderThread[EncodedVideo]):
    """Encodes the daemon's frames once for all its subscribers; see the module docstring."""

    def __init__(
        self,
        frames: Broadcast[VideoFrame],
        codec: str,
        bitrate: int,
        fps: int,
        alpha: bool = False,
        colour: SharedI420 | None = None,
        name: str = "",
        min_keyframe_gap: float = MIN_KEYFRAME_GAP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name or f"{codec}{'+alpha' if alpha else ''}@{bitrate // 1000}k")
        self.codec = codec
        self.bitrate = bitrate
        self.fps = fps
        self.alpha = alpha
        self._frames = frames
        self._colour = colour or SharedI420()
        self._min_gap = min_keyframe_gap
        self._clock = clock
        self._lock = threading.Lock()
        self._keyframe_wanted = False
        self._last_forced = -1e9
        self._ctx: Any = None
        self._sent: collections.deque[tuple[float, int]] = collections.deque()  # (clock, bytes) for rate_bps
        self.encoded = 0  # encode calls (one per frame taken)
        self.keyframes = 0
        self.forced_keyframes = 0
        self.keyframe_requests: collections.Counter[str] = collections.Counter()
        self.cpu_seconds = 0.0  # this thread's CPU time spent converting and encoding
        self.errors = 0

    def subscribe(self, loop: asyncio.AbstractEventLoop, maxsize: int = SUBSCRIBER_QUEUE) -> Subscription[EncodedVideo]:
        """A new receiver of this stream; it gets a keyframe soon (it cannot decode anything before one)."""
        sub = self.output.subscribe(maxsize=maxsize, loop=loop)
        self.request_keyframe("subscriber")
        return sub

    def request_keyframe(self, reason: str) -> None:
        """Thread-safe; honoured at the next frame, or when MIN_KEYFRAME_GAP_S has passed since the last one."""
        with self._lock:
            self._keyframe_wanted = True
            self.keyframe_requests[reason] += 1

    @property
    def rate_bps(self) -> float:
        """What this encoder sent over the last RATE_WINDOW_S seconds (less just after it started), in bits/s."""
        now = self._clock()
        with self._lock:
            while self._sent and now - self._sent[0][0] > RATE_WINDOW_S:
                self._sent.popleft()
            if not self._sent:
                return 0.0
            span = min(RATE_WINDOW_S, now - self._sent[0][0] + 1.0 / self.fps)
            return sum(n for _, n in self._sent) * 8.0 / max(span, 0.5)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "codec": self.codec, "alpha": self.alpha, "bitrate_kbps": self.bitrate // 1000,
                "subscribers": self.subscribers, "encoded": self.encoded, "keyframes": self.keyframes,
                "forced_keyframes": self.forced_keyframes, "sent_kbps": round(self.rate_bps / 1000.0, 1),
                "cpu_s": round(self.cpu_seconds, 3)}

    # --- the encode thread --------------------------------------------------------------------------------

    def _take_keyframe_request(self) -> bool:
        with self._lock:
            if not self._keyframe_wanted or self._clock() - self._last_forced < self._min_gap:
                return False
            self._keyframe_wanted = False
            self._last_forced = self._clock()
            self.forced_keyframes += 1
            return True

    def _image(self, frame: VideoFrame) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(self._colour.get(frame, self.alpha), format="yuv420p")

    def encode(self, frame: VideoFrame, pts: int) -> tuple[bytes, bool] | None:
        """Encode one frame on the calling thread: (bitstream, is a keyframe), or None when the codec gave
        nothing back."""
        image = self._image(frame)
        if self._ctx is None or (self._ctx.width, self._ctx.height) != (image.width, image.height):
            self._ctx = open_codec(self.codec, image.width, image.height, self.fps, self.bitrate)
        forced = self._take_keyframe_request()
        image.pict_type = av.video.frame.PictureType.I if forced else av.video.frame.PictureType.NONE
        image.pts = pts
        image.time_base = VIDEO_TIME_BASE
        packets = self._ctx.encode(image)
        self.encoded += 1
        if not packets:
            return None
        data = b"".join(bytes(p) for p in packets)
        keyframe = any(p.is_keyframe for p in packets)
        if keyframe:
            self.keyframes += 1
            with self._lock:
                self._keyframe_wanted = False  # a natural keyframe serves any waiting request too
        return data, keyframe

    def _run(self) -> None:
        sub = self._frames.subscribe(maxsize=1)  # the newest frame only
        seq = 0
        last_pts = -1
        try:
            while not self._stop.is_set():
                frame = sub.get(timeout=0.2)
                if frame is None:
                    if sub.closed:
                        break
                    continue
                pts = media_to_ticks(frame.pts, VIDEO_CLOCK)
                if pts <= last_pts:
                    continue
                last_pts = pts
                started = time.thread_time()
                try:
                    encoded = self.encode(frame, pts)
                except Exception as exc:  # a broken frame or codec must not end the stream: reopen next frame
                    self.errors += 1
                    self._ctx = None
                    if self.errors == 1 or self.errors % 250 == 0:  # bounded: once, then every 10 s at 25 fps
                        log.warning("video encoder %s failed on frame %d (%d failures): %s", self.name,
                                    frame.index, self.errors, exc)
                    continue
                finally:
                    self.cpu_seconds += time.thread_time() - started
                if encoded is None:
                    continue
                item = EncodedVideo(encoded[0], frame.pts, encoded[1], seq, frame.audio_time, frame.rendered_at)
                seq += 1
                self._count_sent(len(item.data))
                self.output.publish(item)
        finally:
            sub.close()
            self.output.close()

    def _count_sent(self, size: int) -> None:
        now = self._clock()
        with self._lock:
            self._sent.append((now, size))
            while self._sent and now - self._sent[0][0] > RATE_WINDOW_S:
                self._sent.popleft()
