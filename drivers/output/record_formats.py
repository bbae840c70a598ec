"""What a recording's file name asks for: container, codecs and the muxer settings that write it as it goes.

Every format is written in pieces of about a second that are complete on disk as soon as they are written
(fragmented MP4/MOV, Matroska clusters), the way OBS records: a crash or a power cut loses the last second or
two, never the whole file. WebM (VP9 with an alpha plane) and MOV (ProRes 4444) carry the avatar's alpha
for compositing in an editor or a streaming tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bridge.core.errors import UserError

# Fragments (MP4/MOV) and clusters (Matroska/WebM) of about one second, each flushed to the file when done.
FRAGMENTED_MOV = {
    "movflags": "frag_keyframe+delay_moov+default_base_moof",
    "frag_duration": "1000000",  # microseconds; with all-intra ProRes every frame is a keyframe
    "flush_packets": "1",
}
CLUSTERED_MATROSKA = {"cluster_time_limit": "1000", "flush_packets": "1"}


@dataclass(frozen=True)
class RecordFormat:
    """One kind of recording file."""

    name: str
    suffixes: tuple[str, ...]
    container: str  # FFmpeg muxer
    video_codec: str
    pix_fmt: str
    alpha_pix_fmt: str | None  # None: the format keeps no alpha (the picture is composited over the background)
    audio_codec: str
    muxer_options: dict[str, str]
    audio_block: int = 320  # samples per audio frame when the codec takes any size (PCM)

    @property
    def keeps_alpha(self) -> bool:
        return self.alpha_pix_fmt is not None

    def video_options(self, fps: int, crf: int, preset: str, alpha: bool) -> dict[str, str]:
        """Encoder settings: a keyframe every second (so every fragment starts with one) and no look-ahead
        that would hold frames back from the file."""
        if self.video_codec == "libx264":
            return {"crf": str(crf), "preset": preset, "g": str(fps), "keyint_min": str(fps)}
        if self.video_codec == "libvpx-vp9":
            # VP9's quantiser scale is 0-63 where H.264's is 0-51; alt-ref frames do not work with alpha.
            return {"crf": str(min(63, round(crf * 63 / 51) + 6)), "b": "0", "g": str(fps), "deadline": "realtime",
                    "cpu-used": "8", "row-mt": "1", "lag-in-frames": "0", "auto-alt-ref": "0"}
        if self.video_codec == "prores_ks":
            return {"profile": "4444" if alpha else "hq", "vendor": "apl0"}
        return {}


FORMATS = (
    RecordFormat("MP4 (H.264 + AAC)", (".mp4", ".m4v"), "mp4", "libx264", "yuv420p", None, "aac", FRAGMENTED_MOV),
    RecordFormat("Matroska (H.264 + AAC)", (".mkv",), "matroska", "libx264", "yuv420p", None, "aac",
                 CLUSTERED_MATROSKA),
    RecordFormat("WebM (VP9 with alpha + Opus)", (".webm",), "webm", "libvpx-vp9", "yuv420p", "yuva420p", "libopus",
                 CLUSTERED_MATROSKA),
    RecordFormat("QuickTime (ProRes 4444 with alpha + PCM)", (".mov",), "mov", "prores_ks", "yuv422p10le",
                 "yuva444p10le", "pcm_s16le", FRAGMENTED_MOV),
)


def format_for(path: Path) -> RecordFormat:
    """The format a file name asks for; raises UserError for a suffix no format writes."""
    suffix = path.suffix.lower()
    for fmt in FORMATS:
        if suffix in fmt.suffixes:
            return fmt
    choices = ", ".join(f"{s} ({f.name})" for f in FORMATS for s in f.suffixes[:1])
    raise UserError(f"cannot record to {path}: {suffix or 'no extension'} is not a recording format; "
                    f"end the file name with one of {choices}")
