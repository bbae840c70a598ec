"""The shared encoders of the daemon's WebRTC outputs (viewers and the WHIP publisher): one video encoder per
stream (codec, packed alpha or not, bitrate tier) and one Opus encoder, each started when its first
subscriber comes and stopped when its last one leaves.

Video is stamped in 90 kHz ticks and audio in 48 kHz ticks of the media clock from media time 0, for every
stream and every viewer alike: a viewer's two tracks share that origin, so lips and voice line up by RTP
time whenever it joined and whichever tier it is on. Call everything here from the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.core.fanout import Broadcast
from bridge.core.interfaces import AudioChunk, MediaHub, VideoFrame
from drivers.output.webrtc.audio_encoder import AudioEncoder
from drivers.output.webrtc.encoder import SharedI420, VideoEncoder
from drivers.output.webrtc.tiers import tier_bitrates


@dataclass(frozen=True)
class StreamKey:
    codec: str
    alpha: bool
    tier: int


class MediaFanout:
    def __init__(
        self,
        frames: Broadcast[VideoFrame],
        audio: Broadcast[AudioChunk],
        now: Callable[[], float],
        fps: int,
        bitrate_kbps: int,
        tiers: int = 1,
    ) -> None:
        self._frames = frames
        self._audio_in = audio
        self.now = now
        self.fps = fps
        self.bitrates = tier_bitrates(bitrate_kbps * 1000, tiers)
        self.colour = SharedI420()  # one RGB → I420 conversion per frame for every video encoder
        self._video: dict[StreamKey, VideoEncoder] = {}
        self._audio: AudioEncoder | None = None
        self.started = 0  # encoders started so far (video and audio)

    @classmethod
    def for_hub(cls, hub: MediaHub) -> MediaFanout:
        """Encoders of `hub`'s frames and speech, with the [webrtc] section's bitrate and tiers."""
        cfg = hub.config.webrtc
        return cls(hub.frames, hub.audio_out, hub.clock.now, hub.config.video.fps, cfg.bitrate_kbps, cfg.tiers)

    def video(self, codec: str, alpha: bool, tier: int) -> VideoEncoder:
        """The running encoder of this stream (started now if nobody watched it)."""
        tier = min(max(tier, 0), len(self.bitrates) - 1)
        key = StreamKey(codec, alpha, tier)
        encoder = self._video.get(key)
        if encoder is None or not encoder.running:
            encoder = VideoEncoder(self._frames, codec, self.bitrates[tier], self.fps, alpha=alpha,
                                   colour=self.colour)
            encoder.start()
            self._video[key] = encoder
            self.started += 1
        return encoder

    def audio(self) -> AudioEncoder:
        if self._audio is None or not self._audio.running:
            self._audio = AudioEncoder(self._audio_in, self.now)
            self._audio.start()
            self.started += 1
        return self._audio

    def release(self) -> None:
        """Stop every encoder nobody subscribes to any more (call after closing a subscription)."""
        for key, encoder in list(self._video.items()):
            if encoder.subscribers == 0:
                encoder.stop()
                del self._video[key]
        if self._audio is not None and self._audio.subscribers == 0:
            self._audio.stop()
            self._audio = None

    @property
    def video_encoders(self) -> list[VideoEncoder]:
        return list(self._video.values())

    @property
    def audio_encoder(self) -> AudioEncoder | None:
        return self._audio

    def close(self) -> list[VideoEncoder | AudioEncoder]:
        """Stop every encoder (their subscribers' streams end); returns them, to join."""
        stopped: list[VideoEncoder | AudioEncoder] = [*self._video.values()]
        self._video.clear()
        if self._audio is not None:
            stopped.append(self._audio)
            self._audio = None
        for encoder in stopped:
            encoder.stop()
        return stopped

    async def aclose(self) -> None:
        """`close()`, then wait (off the loop) for the encoder threads to end."""
        stopped = self.close()
        await asyncio.get_running_loop().run_in_executor(None, lambda: [e.join(2.0) for e in stopped])

    def describe(self) -> dict[str, Any]:
        return {"tiers_kbps": [b // 1000 for b in self.bitrates],
                "video": [{**e.describe(), "tier": k.tier} for k, e in self._video.items()],
                "audio": self._audio.describe() if self._audio is not None else None}
