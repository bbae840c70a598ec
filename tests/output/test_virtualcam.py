"""Virtual camera: pixel conversions against FFmpeg's, the drift-free pacer on a simulated clock, the error
with the fix when no device exists, and a real v4l2loopback round trip when one does."""

from __future__ import annotations

import glob
import sys
from typing import ClassVar

import av
import numpy as np
import pytest

from bridge.core.errors import UserError
from bridge.core.interfaces import StreamInfo, VideoFrame
from drivers.output.virtualcam import FramePacer, VirtualCameraSink, convert, rgb_to_i420, rgb_to_nv12


def blocky_image(h: int = 64, w: int = 96) -> np.ndarray:
    """Random colours constant over 2×2 blocks, so chroma siting cannot matter."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)


def tiles(h: int = 64, w: int = 96, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, (h // size, w // size, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, size, axis=0), size, axis=1)


def test_i420_matches_ffmpeg_bt601_limited() -> None:
    rgb = tiles()
    ours = rgb_to_i420(rgb).astype(int)
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray().astype(int)
    assert ours.shape == ref.shape == (96, 96)
    assert np.abs(ours[:64] - ref[:64]).max() <= 1  # luma everywhere
    # Chroma inside the tiles (FFmpeg's chroma filter blends across tile edges; ours is a 2×2 box).
    inner = np.zeros((32, 48), bool)
    for r in range(32):
        for c in range(48):
            inner[r, c] = 1 < r % 8 < 6 and 1 < c % 8 < 6
    for plane in (slice(0, 32 * 48), slice(32 * 48, 2 * 32 * 48)):
        a = ours[64:].reshape(-1)[plane].reshape(32, 48)
        b = ref[64:].reshape(-1)[plane].reshape(32, 48)
        assert np.abs(a - b)[inner].max() <= 2, np.abs(a - b)[inner].max()


def test_nv12_is_i420_with_interleaved_chroma() -> None:
    rgb = blocky_image()
    i420, nv12 = rgb_to_i420(rgb), rgb_to_nv12(rgb)
    h, w = 64, 96
    assert np.array_equal(i420[:h], nv12[:h])
    u = i420[h:].reshape(-1)[: h * w // 4]
    v = i420[h:].reshape(-1)[h * w // 4 :]
    uv = nv12[h:].reshape(-1)
    assert np.array_equal(uv[0::2], u) and np.array_equal(uv[1::2], v)
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12").to_ndarray().astype(int)
    assert np.abs(nv12[:h].astype(int) - ref.reshape(nv12.shape)[:h]).max() <= 1


def test_mirror_and_rgb_passthrough_and_odd_sizes() -> None:
    rgb = blocky_image()
    assert np.array_equal(convert(rgb, "rgb", mirror=True), rgb[:, ::-1])
    assert np.array_equal(convert(rgb, "i420", mirror=True), rgb_to_i420(np.ascontiguousarray(rgb[:, ::-1])))
    with pytest.raises(ValueError, match="even"):
        rgb_to_i420(np.zeros((63, 96, 3), np.uint8))


def test_torch_tensors_convert_like_numpy() -> None:
    import torch
    rgb = blocky_image()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tensor = torch.from_numpy(rgb).to(device)
    assert np.array_equal(rgb_to_i420(tensor), rgb_to_i420(rgb))
    assert np.array_equal(convert(tensor, "nv12", mirror=True), convert(rgb, "nv12", mirror=True))


class SimClock:
    """A simulated monotonic clock whose sleeps overshoot, as real ones do."""

    def __init__(self, overshoot: float = 0.0013) -> None:
        self.t = 1000.0
        self.overshoot = overshoot
        self.sleeps = 0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds + self.overshoot


def test_pacer_does_not_drift_and_skips_after_a_stall() -> None:
    clock = SimClock()
    pacer = FramePacer(30, now=clock.now, sleep=clock.sleep)
    for _ in range(30 * 600):  # ten simulated minutes
        slot = pacer.wait()
    # Sleep overshoot never accumulates: slot k is sent within one overshoot of origin + k / fps.
    assert abs(clock.t - pacer.deadline(slot)) < 0.002
    assert pacer.skipped == 0 and slot == 30 * 600 - 1
    clock.t += 0.5  # the machine stalls for half a second
    late = pacer.wait()
    assert pacer.skipped == 14 and late == slot + 15  # stale slots skipped, no burst of frames
    assert 0 <= clock.t - pacer.deadline(late) < 1 / 30  # the slot sent is the one due now
    nxt = pacer.wait()
    assert nxt == late + 1 and abs(clock.t - pacer.deadline(nxt)) < 0.002


def loopback_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*"))


@pytest.mark.skipif(bool(loopback_devices()) or not sys.platform.startswith("linux"),
                    reason="a video device exists; the missing-device message is not reachable here")
def test_missing_device_error_says_how_to_create_one() -> None:
    sink = VirtualCameraSink()
    with pytest.raises(UserError) as err:
        sink.open(StreamInfo(128, 128, 25))
    text = str(err.value)
    assert "modprobe v4l2loopback" in text and "exclusive_caps=1" in text and "card_label" in text


@pytest.mark.skipif(not loopback_devices(), reason="no /dev/video* device: load v4l2loopback to run this test "
                    "(sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=AvatarBridge)")
def test_frames_reach_a_v4l2loopback_device() -> None:
    import threading
    import time

    device = loopback_devices()[-1]
    sink = VirtualCameraSink(device=device, fmt="i420")
    sink.open(StreamInfo(128, 128, 25))
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            rgb = np.full((128, 128, 3), (200, 40, 40), np.uint8)
            sink.write_video(VideoFrame(rgb=rgb, pts=i / 25, index=i))
            i += 1
            time.sleep(0.04)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        with av.open(device, format="v4l2") as cam:
            frame = next(cam.decode(video=0))
            picture = frame.to_ndarray(format="rgb24")
        assert picture.shape[:2] == (128, 128)
        assert abs(int(picture[..., 0].mean()) - 200) < 12 and picture[..., 1].mean() < 60
    finally:
        stop.set()
        feeder.join()
        sink.close()
    assert sink.sent > 0


# --- alpha: RGBA where the backend takes it ----------------------------------------------------------------

class RecordingBackend:
    """A pyvirtualcam backend (registered through its plug-in API) that keeps what it is sent; `takes` is the
    one pixel format it accepts, as each real backend accepts only some (Unity Capture: RGBA among others)."""

    takes = "ABGR"
    frames: ClassVar[list[np.ndarray]] = []

    def __init__(self, width: int, height: int, fps: float, fourcc: int, device: str | None, **_: object) -> None:
        from pyvirtualcam.util import decode_fourcc

        if decode_fourcc(fourcc) != self.takes:
            raise RuntimeError(f"unsupported format {decode_fourcc(fourcc)}")

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "recording camera"

    def native_fourcc(self) -> None:
        return None

    def send(self, frame: np.ndarray) -> None:
        type(self).frames.append(frame.copy())


class RgbaOnly(RecordingBackend):
    takes = "ABGR"
    frames: ClassVar[list[np.ndarray]] = []


class I420Only(RecordingBackend):
    takes = "I420"
    frames: ClassVar[list[np.ndarray]] = []


@pytest.fixture
def recording_backends() -> object:
    import pyvirtualcam  # a dependency: never skipped
    from pyvirtualcam import camera

    pyvirtualcam.register_backend("test-rgba", RgbaOnly)
    pyvirtualcam.register_backend("test-i420", I420Only)
    RgbaOnly.frames, I420Only.frames = [], []
    I420Only.takes = "I420"
    yield
    camera.BACKENDS.pop("test-rgba", None)
    camera.BACKENDS.pop("test-i420", None)


def transparent_frame(index: int = 0) -> VideoFrame:
    alpha = np.zeros((64, 96), np.uint8)
    alpha[16:48, 24:72] = 255
    alpha[16:48, 20:24] = 128  # a soft edge
    straight = np.array([200, 120, 40], np.float32)
    rgb = np.round(alpha[..., None] / 255.0 * straight).astype(np.uint8)
    return VideoFrame(rgb=rgb, pts=index / 25, index=index, alpha=alpha)


def send_some(sink: VirtualCameraSink, backend: type[RecordingBackend]) -> None:
    import time

    sink.open(StreamInfo(96, 64, 25))
    try:
        deadline = time.monotonic() + 10
        while not backend.frames and time.monotonic() < deadline:
            sink.write_video(transparent_frame())
            time.sleep(0.02)
    finally:
        sink.close()
    assert backend.frames, "nothing reached the camera"


def test_straight_rgba_unpremultiplies() -> None:
    frame = transparent_frame()
    rgba = convert(frame.rgb, "rgba", alpha=frame.alpha)
    assert rgba.shape == (64, 96, 4) and np.array_equal(rgba[..., 3], frame.alpha)
    assert (rgba[30, 40, :3] == (200, 120, 40)).all()
    assert np.abs(rgba[30, 21, :3].astype(int) - (200, 120, 40)).max() <= 2  # the soft edge too (8-bit rounding)
    assert (rgba[0, 0] == 0).all()  # nothing there: transparent black
    opaque = convert(frame.rgb, "rgba")
    assert (opaque[..., 3] == 255).all() and np.array_equal(opaque[..., :3], frame.rgb)
    mirrored_rgba = convert(frame.rgb, "rgba", mirror=True, alpha=frame.alpha)
    assert np.array_equal(mirrored_rgba, rgba[:, ::-1])


@pytest.mark.usefixtures("recording_backends")
def test_a_transparent_avatar_goes_out_as_rgba_where_the_backend_takes_it() -> None:
    sink = VirtualCameraSink(backend="test-rgba", alpha=True)
    send_some(sink, RgbaOnly)
    assert sink.fmt_name == "rgba"
    sent = RgbaOnly.frames[-1].reshape(64, 96, 4)  # backends get the frame as flat bytes
    assert np.array_equal(sent[..., 3], transparent_frame().alpha) and (sent[30, 40, :3] == (200, 120, 40)).all()


@pytest.mark.usefixtures("recording_backends")
def test_without_an_rgba_backend_it_falls_back_and_rgba_on_demand_says_why() -> None:
    sink = VirtualCameraSink(backend="test-i420", fmt="auto", alpha=True)
    if not sys.platform.startswith("linux"):  # auto means NV12 there; the point is the fallback
        I420Only.takes = "NV12"
    send_some(sink, I420Only)
    assert sink.fmt_name in ("i420", "nv12") and I420Only.frames[-1].size == 96 * 64 * 3 // 2
    with pytest.raises(UserError, match="Unity Capture"):
        VirtualCameraSink(backend="test-i420", fmt="rgba", alpha=True).open(StreamInfo(96, 64, 25))
