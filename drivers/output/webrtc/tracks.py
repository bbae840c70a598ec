"""The WebRTC tracks of one viewer (or of the WHIP publisher): already-encoded video and speech from the
shared encoders (`drivers.output.webrtc.fanout`), handed to aiortc as `av.Packet`s, which its sender
packetizes without encoding again.

Timestamps: video in 90 kHz and audio in 48 kHz ticks of the media clock from media time 0 (aiortc adds its
random RTP origin), so the two tracks of a viewer line up by RTP time and RTCP sender reports.

The video track also owns this viewer's side of the sharing: it starts at a keyframe and, after losing a
frame from its latest-wins queue, skips to the next keyframe (asking for one) rather than send frames that
reference a picture the receiver never got. It routes its sender's RTCP feedback: PLI/FIR become keyframe
requests to the shared encoder, REMB estimates and reported loss drive the viewer's bitrate tier
(`drivers.output.webrtc.tiers`).

A keyframe is several times the size of other frames and every viewer of the encoder receives it, so one
viewer's PLI/FIR is honoured at most once per PLI_GAP_S (the rest are counted in `pli_ignored`): a receiver
that floods PLIs raises the keyframe rate of everyone else to that much and no more. Its own picture still
recovers; a real receiver asks again while it cannot decode.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from bridge.core.fanout import Subscription
from bridge.core.stats import PipelineStats
from drivers.output.webrtc.audio_encoder import AUDIO_TIME_BASE, EncodedAudio
from drivers.output.webrtc.encoder import (
    VIDEO_CLOCK,
    VIDEO_TIME_BASE,
    EncodedVideo,
    VideoEncoder,
    media_to_ticks,
)
from drivers.output.webrtc.fanout import MediaFanout
from drivers.output.webrtc.tiers import TierPolicy

PLI_GAP_S = 2.0  # one viewer's PLI/FIR forces a keyframe for the whole encoder at most this often


class EncodedVideoTrack(MediaStreamTrack):
    """One viewer's video: the shared encoder's frames from a keyframe on; see the module docstring."""

    kind = "video"

    def __init__(
        self,
        fanout: MediaFanout,
        codec: str,
        alpha: bool,
        loop: asyncio.AbstractEventLoop,
        now: Callable[[], float],
        stats: PipelineStats | None = None,
        stage: str = "g2g:webrtc",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.codec = codec
        self.alpha = alpha
        self.policy = TierPolicy(len(fanout.bitrates))
        self._fanout = fanout
        self._event_loop = loop
        self._now = now
        self._clock = clock
        self._stats = stats
        self._stage = stage
        self._encoder: VideoEncoder = fanout.video(codec, alpha, 0)
        self._sub: Subscription[EncodedVideo] = self._encoder.subscribe(loop)
        self._expect: int | None = None  # the next encoder seq; another one means frames were lost
        self._synced = False  # a keyframe was sent and nothing lost since
        self._last_pts = -1
        self.first_media_time: float | None = None
        self.last_media_time: float | None = None
        self.sent = 0
        self.keyframes_sent = 0
        self.waited = 0  # frames not sent while waiting for a keyframe
        self.lost = 0  # frames this viewer's queue dropped
        self.pli = 0
        self.pli_ignored = 0  # PLI/FIR inside PLI_GAP_S of the last honoured one
        self._last_pli = float("-inf")
        self.remb: int | None = None
        self.lag: collections.deque[float] = collections.deque(maxlen=256)  # hand-off time − presentation time
        self.render_late: collections.deque[float] = collections.deque(maxlen=256)  # rendered − presentation time

    @property
    def encoder(self) -> VideoEncoder:
        return self._encoder

    @property
    def tier(self) -> int:
        return self.policy.tier

    async def recv(self) -> av.Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            self._probe()
            sub = self._sub
            item = await sub.aget()
            if item is None:
                if sub is not self._sub:
                    continue  # switched to another tier meanwhile
                self.stop()
                raise MediaStreamError
            if self._expect is not None and item.seq != self._expect:
                self.lost += item.seq - self._expect
                self._synced = False
                self._encoder.request_keyframe("loss")
            self._expect = item.seq + 1
            pts = media_to_ticks(item.media_time, VIDEO_CLOCK)
            if pts <= self._last_pts:  # the same picture from another tier's encoder: never send time backwards
                if item.keyframe and not self._synced:
                    self._encoder.request_keyframe("resync")
                continue
            if not self._synced:
                if not item.keyframe:
                    self.waited += 1
                    continue
                self._synced = True
            break
        packet = av.Packet(item.data)
        packet.pts = pts
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = item.keyframe
        self._last_pts = pts
        if self.first_media_time is None:
            self.first_media_time = item.media_time
        self.last_media_time = item.media_time
        self.sent += 1
        self.keyframes_sent += item.keyframe
        self.lag.append(self._now() - item.media_time)
        self.render_late.append(item.rendered_at - item.media_time)
        if self._stats is not None and item.audio_time is not None:
            self._stats.time(self._stage, max(0.0, self._now() - item.audio_time))
        return packet

    # --- RTCP feedback and tiers ------------------------------------------------------------------------

    def bind(self, sender: Any) -> None:
        """Take this sender's RTCP feedback. aiortc would only flag its own encoder, which packets bypass."""
        handle = sender._handle_rtcp_packet

        async def on_rtcp(packet: Any) -> None:
            self.feedback(packet, sender._ssrc)
            await handle(packet)

        sender._handle_rtcp_packet = on_rtcp

    def feedback(self, packet: Any, ssrc: int) -> None:
        if self.readyState != "live":
            return
        tier = None
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == ssrc:
                    tier = self.policy.on_loss(report.fraction_lost / 256.0, self._clock())
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.pli += 1
            now = self._clock()
            if now - self._last_pli < PLI_GAP_S:
                self.pli_ignored += 1
            else:
                self._last_pli = now
                self._encoder.request_keyframe("pli")
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if ssrc in ssrcs:
                self.remb = bitrate
                tier = self.policy.on_estimate(bitrate, self._encoder.rate_bps, self._clock())
        if tier is not None:
            self._switch(tier)

    def _probe(self) -> None:
        tier = self.policy.poll(self._clock())
        if tier is not None:
            self._switch(tier)

    def _switch(self, tier: int) -> None:
        """Move to another tier's encoder; its next keyframe (requested by subscribing) resumes the picture."""
        old = self._sub
        self._encoder = self._fanout.video(self.codec, self.alpha, tier)
        self._sub = self._encoder.subscribe(self._event_loop)
        self._expect = None
        self._synced = False
        old.close()
        self._fanout.release()

    def stop(self) -> None:
        self._sub.close()
        self._fanout.release()
        super().stop()


class EncodedAudioTrack(MediaStreamTrack):
    """One viewer's speech: the shared Opus encoder's packets, each handed over at its presentation time."""

    kind = "audio"

    def __init__(self, fanout: MediaFanout, loop: asyncio.AbstractEventLoop, now: Callable[[], float]) -> None:
        super().__init__()
        self._fanout = fanout
        self._sub: Subscription[EncodedAudio] = fanout.audio().subscribe(loop)
        self._now = now
        self.first_media_time: float | None = None
        self.sent = 0
        self.lag: collections.deque[float] = collections.deque(maxlen=256)  # hand-off time − presentation time

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._sub.aget()
        if item is None:
            self.stop()
            raise MediaStreamError
        packet = av.Packet(item.data)
        packet.pts = item.sample
        packet.time_base = AUDIO_TIME_BASE
        if self.first_media_time is None:
            self.first_media_time = item.media_time
        self.sent += 1
        self.lag.append(self._now() - item.media_time)
        return packet

    def stop(self) -> None:
        self._sub.close()
        self._fanout.release()
        super().stop()


def video_track(
    fanout: MediaFanout, codec: str, alpha: bool = False, stats: PipelineStats | None = None
) -> EncodedVideoTrack:
    """One peer's video track, on the running loop."""
    return EncodedVideoTrack(fanout, codec, alpha, asyncio.get_running_loop(), fanout.now, stats=stats)


def audio_track(fanout: MediaFanout) -> EncodedAudioTrack:
    """One peer's speech track, on the running loop."""
    return EncodedAudioTrack(fanout, asyncio.get_running_loop(), fanout.now)
