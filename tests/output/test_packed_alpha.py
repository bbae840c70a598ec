"""Packed alpha through real codecs: colour and alpha packed into one I420 frame, encoded with VP8 and H.264
(PyAV), decoded, converted to RGB the way a browser does (BT.601 limited range) and unpacked again."""

from __future__ import annotations

import av
import numpy as np
import pytest

from bridge.core.interfaces import VideoFrame
from drivers.output.webrtc.encoder import VIDEO_TIME_BASE, SharedI420, open_codec
from drivers.output.webrtc.packed_alpha import GUARD_ROWS, alpha_offset, pack_i420, packed_height, unpack_rgb


def disc_frame(width: int, height: int, index: int = 0) -> VideoFrame:
    """A soft-edged orange disc, premultiplied over black like the renderers' transparent output."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot(xx - width * 0.5, yy - height * 0.45)
    alpha = np.clip((height * 0.3 - r) / 6.0, 0.0, 1.0)
    straight = np.array([230.0, 140.0, 60.0], np.float32)
    rgb = (alpha[..., None] * straight).round().astype(np.uint8)
    return VideoFrame(rgb=rgb, pts=index / 25, index=index, alpha=(alpha * 255).round().astype(np.uint8))


def round_trip(codec: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, VideoFrame]:
    frame = disc_frame(width, height)
    planes = pack_i420(SharedI420().get(frame), frame.alpha, width, height)
    image = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    ctx = open_codec(codec, width, packed_height(height), 25, 1_500_000)
    decoder = av.CodecContext.create("libvpx" if codec == "vp8" else "h264", "r")
    decoded = []
    for i in range(3):  # a keyframe, then two predicted frames of the same picture
        image.pts = i * 3600
        image.time_base = VIDEO_TIME_BASE
        for packet in ctx.encode(image):
            decoded += decoder.decode(av.Packet(bytes(packet)))
    rgb = decoded[-1].to_ndarray(format="rgb24")
    colour, alpha = unpack_rgb(rgb, height)
    return colour, alpha, frame


def test_layout_keeps_halves_on_macroblock_rows() -> None:
    assert packed_height(128) == 2 * 128 + GUARD_ROWS and alpha_offset(128) == 144
    assert packed_height(120) == 2 * 128 + GUARD_ROWS and alpha_offset(120) == 144  # padded to 16
    assert alpha_offset(720) % 16 == 0 and packed_height(1080) == 2 * 1088 + 16
    frame = disc_frame(64, 48)
    packed = pack_i420(SharedI420().get(frame), frame.alpha, 64, 48)
    assert packed.shape == (packed_height(48) * 3 // 2, 64)
    y = packed[: packed_height(48)]
    assert (y[48:alpha_offset(48)] == 16).all()  # padding and guard are black
    assert y[alpha_offset(48):].max() <= 235 and y[alpha_offset(48):].min() == 16  # alpha as limited-range luma
    opaque = pack_i420(SharedI420().get(frame), None, 64, 48)[: packed_height(48)]
    assert (opaque[alpha_offset(48) : alpha_offset(48) + 48] == 235).all()  # no alpha: fully opaque


@pytest.mark.parametrize("codec", ["vp8", "h264"])
@pytest.mark.parametrize("size", [(128, 128), (96, 120)])
def test_alpha_and_colour_survive_a_real_codec(codec: str, size: tuple[int, int]) -> None:
    width, height = size
    colour, alpha, frame = round_trip(codec, width, height)
    assert frame.alpha is not None
    expected = frame.alpha.astype(int)
    err = np.abs(alpha.astype(int) - expected)
    assert np.median(err) <= 2 and np.percentile(err, 99) <= 24, (np.median(err), np.percentile(err, 99))
    assert alpha[expected == 0].max() < 16, "alpha leaks where there is nothing"
    assert alpha[expected == 255].min() > 235, "the head is not opaque"
    inside = expected == 255
    assert np.abs(colour[inside].astype(int) - frame.rgb[inside].astype(int)).mean() < 6
    # The colour half is untouched by the alpha half below it (the guard band): its last rows stay black.
    assert colour[-2:].max() < 12
