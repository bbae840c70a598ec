"""Virtual webcam sink (pyvirtualcam): the avatar appears as a camera in Zoom, Meet, Teams and OBS.

A camera consumer expects frames on a steady clock, so the sink sends on its own thread at exactly `fps`
(absolute deadlines: no drift however long it runs), repeating the newest frame when the renderer is late
and skipping stale slots when the machine stalled. Frames are converted to the pixel format the backend
takes (RGB, I420 or NV12; BT.601 limited range); a frame that is a CUDA tensor is converted on the GPU.
A device that is busy or vanishes is reopened with backoff; a missing device at start is a clear error that
says how to create one.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.core.config import Config
from bridge.core.errors import UserError
from bridge.core.interfaces import AudioChunk, StreamInfo, VideoFrame

log = logging.getLogger(__name__)

FORMATS = ("rgb", "i420", "nv12")


def no_device_help() -> str:
    if sys.platform.startswith("linux"):
        return ("create a v4l2loopback camera: 'sudo apt install v4l2loopback-dkms' then "
                "'sudo modprobe v4l2loopback devices=1 video_nr=10 exclusive_caps=1 card_label=\"Avatar Bridge\"' "
                "(exclusive_caps=1 makes Chrome and Zoom list it), and set outputs.virtualcam.device = '/dev/video10'")
    return ("install OBS Studio (28 or newer), start its Virtual Camera once (Tools → Start Virtual Camera), "
            "then stop it in OBS so this daemon can use it")


# --- pure conversions (numpy or torch; the same arithmetic) -----------------------------------------------

def _coeffs() -> tuple[tuple[float, float, float, float], ...]:
    # BT.601 limited range: Y in [16, 235], U and V in [16, 240]
    return ((0.257, 0.504, 0.098, 16.0), (-0.148, -0.291, 0.439, 128.0), (0.439, -0.368, -0.071, 128.0))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def rgb_to_yuv_planes(rgb: Any) -> tuple[Any, Any, Any]:
    """Y (H, W) and 2×2-averaged U, V (H/2, W/2) as uint8, for numpy arrays or torch tensors (any device)."""
    h, w = rgb.shape[0], rgb.shape[1]
    if h % 2 or w % 2:
        raise ValueError(f"I420/NV12 need an even width and height, got {w}x{h}")
    if _is_torch(rgb):
        f = rgb[..., :3].float()
    else:
        f = np.asarray(rgb[..., :3], np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    (yr, yg, yb, yo), (ur, ug, ub, uo), (vr, vg, vb, vo) = _coeffs()
    y = yr * r + yg * g + yb * b + yo

    def pool(c: Any) -> Any:
        return (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2]) * 0.25

    rp, gp, bp = pool(r), pool(g), pool(b)
    u = ur * rp + ug * gp + ub * bp + uo
    v = vr * rp + vg * gp + vb * bp + vo
    if _is_torch(rgb):
        import torch

        return tuple(torch.round(c).clamp(0, 255).to(torch.uint8) for c in (y, u, v))  # type: ignore[return-value]
    return tuple(np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))  # type: ignore[return-value]


def _host(x: Any) -> NDArray[np.uint8]:
    return np.asarray(x.cpu().numpy() if _is_torch(x) else x, np.uint8)


def rgb_to_i420(rgb: Any) -> NDArray[np.uint8]:
    """Planar Y, U, V in one buffer of W*H*3/2 bytes, shaped (H*3/2, W) as pyvirtualcam takes it."""
    y, u, v = rgb_to_yuv_planes(rgb)
    h, w = y.shape[0], y.shape[1]
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = _host(y)
    out[h:].reshape(-1)[: u.shape[0] * u.shape[1]] = _host(u).reshape(-1)
    out[h:].reshape(-1)[u.shape[0] * u.shape[1]:] = _host(v).reshape(-1)
    return out


def rgb_to_nv12(rgb: Any) -> NDArray[np.uint8]:
    """Y plane followed by interleaved U/V pairs, shaped (H*3/2, W)."""
    y, u, v = rgb_to_yuv_planes(rgb)
    h, w = y.shape[0], y.shape[1]
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = _host(y)
    uv = out[h:].reshape(h // 2, w // 2, 2)
    uv[..., 0] = _host(u)
    uv[..., 1] = _host(v)
    return out


def mirrored(rgb: Any) -> Any:
    """Left-right flip (what a selfie preview shows)."""
    if _is_torch(rgb):
        return rgb.flip(1)
    return rgb[:, ::-1]


def convert(rgb: Any, fmt: str, mirror: bool = False) -> NDArray[np.uint8]:
    if mirror:
        rgb = mirrored(rgb)
    if fmt == "i420":
        return rgb_to_i420(rgb)
    if fmt == "nv12":
        return rgb_to_nv12(rgb)
    if fmt == "rgb":
        return np.ascontiguousarray(_host(rgb)[..., :3])
    raise ValueError(f"unknown pixel format {fmt!r}; use one of {FORMATS}")


class FramePacer:
    """Deadlines at origin + k / fps. `wait()` sleeps to the next one; after a stall it skips the missed slots
    instead of bursting, and the schedule never accumulates sleep error (no drift)."""

    def __init__(self, fps: float, now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        self.fps = fps
        self._now = now
        self._sleep = sleep
        self.origin = now()
        self.index = 0  # the slot of the next deadline
        self.skipped = 0

    def deadline(self, index: int | None = None) -> float:
        return self.origin + (self.index if index is None else index) / self.fps

    def wait(self) -> int:
        """Sleep until the next slot; returns the slot number that is now due."""
        now = self._now()
        due = self.deadline()
        if now < due:
            self._sleep(due - now)
        else:
            late_slots = int((now - due) * self.fps)
            if late_slots >= 1:
                self.skipped += late_slots
                self.index += late_slots
        slot = self.index
        self.index += 1
        return slot


class VirtualCameraSink:
    name = "virtualcam"

    def __init__(self, device: str | None = None, backend: str | None = None, mirror: bool = False,
                 fmt: str = "auto", retry: tuple[float, float] = (0.5, 10.0)) -> None:
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise UserError(f"pyvirtualcam is not installed ({exc}); run 'pip install pyvirtualcam'") from exc
        if fmt not in ("auto", *FORMATS):
            raise UserError(f"outputs.virtualcam.fmt = {fmt!r}; use auto, rgb, i420 or nv12")
        self._pv = pyvirtualcam
        self.device = device
        self.backend = backend
        self.mirror = mirror
        self.fmt = fmt
        self.retry = retry
        self.camera: Any = None
        self.sent = 0
        self.reopens = 0
        self._latest: NDArray[np.uint8] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._info: StreamInfo | None = None

    @classmethod
    def from_config(cls, config: Config) -> VirtualCameraSink:
        vc = config.outputs.virtualcam
        return cls(device=vc.device, backend=vc.backend, mirror=vc.mirror, fmt=vc.fmt)

    def _pixel_format(self) -> Any:
        pf = self._pv.PixelFormat
        if self.fmt == "auto":  # what the backends take natively: I420 on v4l2loopback, NV12 for OBS
            return pf.I420 if sys.platform.startswith("linux") else pf.NV12
        return {"rgb": pf.RGB, "i420": pf.I420, "nv12": pf.NV12}[self.fmt]

    def _open_camera(self) -> Any:
        assert self._info is not None
        fmt = self._pixel_format()
        try:
            return self._pv.Camera(self._info.width, self._info.height, self._info.fps, fmt=fmt,
                                   device=self.device, backend=self.backend, print_fps=False)
        except Exception as exc:
            text = str(exc)
            if "busy" in text.lower() or "in use" in text.lower():
                raise UserError(f"the virtual camera {self.device or ''} is in use by another program ({text}); "
                                "close it or pick another with outputs.virtualcam.device") from exc
            raise UserError(f"no virtual camera could be opened ({text.strip()}); {no_device_help()}") from exc

    def open(self, info: StreamInfo) -> None:
        self._info = info
        self.camera = self._open_camera()  # a missing device is reported at once, with the fix
        self.fmt_name = str(self.camera.fmt.name if hasattr(self.camera.fmt, "name") else self.camera.fmt)
        self._thread = threading.Thread(target=self._send_loop, name="virtualcam", daemon=True)
        self._thread.start()

    def write_video(self, frame: VideoFrame) -> None:
        fmt = {"RGB": "rgb", "I420": "i420", "NV12": "nv12"}.get(self.fmt_name.split(".")[-1], "rgb")
        data = convert(frame.rgb, fmt, self.mirror)
        with self._lock:
            self._latest = data

    def write_audio(self, chunk: AudioChunk) -> None:
        pass  # a camera carries no audio: the delayed passthrough does

    def _send_loop(self) -> None:
        assert self._info is not None
        pacer = FramePacer(self._info.fps)
        delay = self.retry[0]
        while not self._stop.is_set():
            pacer.wait()
            with self._lock:
                data = self._latest
            if data is None:
                continue
            try:
                if self.camera is None:
                    self.camera = self._open_camera()
                    self.reopens += 1
                    delay = self.retry[0]
                    log.info("virtual camera %s is back", self.camera.device)
                self.camera.send(data)
                self.sent += 1
            except Exception as exc:  # vanished or taken: close and reopen later, never crash
                log.warning("virtual camera failed (%s); reopening in %.1f s", exc, delay)
                self._close_camera()
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2.0, self.retry[1])
                pacer = FramePacer(self._info.fps)

    def _close_camera(self) -> None:
        camera, self.camera = self.camera, None
        if camera is not None:
            try:
                camera.close()
            except Exception as exc:
                log.debug("closing the virtual camera: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self._close_camera()
