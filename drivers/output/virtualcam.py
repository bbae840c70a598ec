"""Virtual webcam sink (pyvirtualcam): the avatar appears as a camera in Zoom, Meet, Teams and OBS.

A camera consumer expects frames on a steady clock, so the sink sends on its own thread at exactly `fps`
(absolute deadlines: no drift however long it runs), repeating the newest frame when the renderer is late
and skipping stale slots when the machine stalled. Frames are converted to the pixel format the backend
takes (RGB, I420 or NV12; BT.601 limited range); a frame that is a CUDA tensor is converted on the GPU.

Alpha: only Unity Capture (Windows) takes RGBA; v4l2loopback, the OBS virtual camera and macOS carry no alpha.
With a transparent avatar and `fmt = "auto"` the sink asks for RGBA first and falls back to the usual format
when no backend takes it; `fmt = "rgba"` insists. RGBA goes out straight (unpremultiplied), as OBS's Video
Capture Device source composites it.
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

FORMATS = ("rgb", "i420", "nv12", "rgba")


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


def straight_rgba(rgb: Any, alpha: Any) -> NDArray[np.uint8]:
    """(H, W, 4) RGBA with unpremultiplied colour, from the renderers' colour premultiplied over black and their
    alpha (None: opaque)."""
    colour = _host(rgb)[..., :3]
    out = np.empty((*colour.shape[:2], 4), np.uint8)
    if alpha is None:
        out[..., :3] = colour
        out[..., 3] = 255
        return out
    a = _host(alpha).astype(np.uint16)
    covered = np.maximum(a, 1)[..., None]
    out[..., :3] = np.minimum((colour.astype(np.uint16) * 255 + covered // 2) // covered, 255)
    out[..., :3][a == 0] = 0
    out[..., 3] = a
    return out


def convert(rgb: Any, fmt: str, mirror: bool = False, alpha: Any = None) -> NDArray[np.uint8]:
    if mirror:
        rgb = mirrored(rgb)
        alpha = None if alpha is None else mirrored(alpha)
    if fmt == "rgba":
        return straight_rgba(rgb, alpha)
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
                 fmt: str = "auto", alpha: bool = False, retry: tuple[float, float] = (0.5, 10.0)) -> None:
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise UserError(f"pyvirtualcam is not installed ({exc}); run 'pip install pyvirtualcam'") from exc
        if fmt not in ("auto", *FORMATS):
            raise UserError(f"outputs.virtualcam.fmt = {fmt!r}; use auto, rgb, i420, nv12 or rgba")
        self._pv = pyvirtualcam
        self.device = device
        self.backend = backend
        self.mirror = mirror
        self.fmt = fmt
        self.alpha = alpha  # the avatar renders coverage (avatar.transparent): send it where a backend takes it
        self.retry = retry
        self.camera: Any = None
        self.sent = 0
        self._sent_at: float | None = None  # time.monotonic() when the last send returned
        self.reopens = 0
        self._latest: tuple[str, NDArray[np.uint8]] | None = None  # (format, data) of the newest frame
        self.fmt_name = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._info: StreamInfo | None = None

    @property
    def wants_alpha(self) -> bool:
        """RGBA asked for (or tried first, with a transparent avatar): the daemon has the avatar produce alpha."""
        return self.fmt == "rgba" or (self.alpha and self.fmt == "auto")

    @classmethod
    def from_config(cls, config: Config) -> VirtualCameraSink:
        vc = config.outputs.virtualcam
        return cls(device=vc.device, backend=vc.backend, mirror=vc.mirror, fmt=vc.fmt,
                   alpha=config.avatar.transparent)

    def _pixel_format(self) -> Any:
        pf = self._pv.PixelFormat
        if self.fmt == "auto":  # what the backends take natively: I420 on v4l2loopback, NV12 for OBS
            return pf.I420 if sys.platform.startswith("linux") else pf.NV12
        return {"rgb": pf.RGB, "i420": pf.I420, "nv12": pf.NV12, "rgba": pf.RGBA}[self.fmt]

    def _camera(self, fmt: Any) -> Any:
        assert self._info is not None
        return self._pv.Camera(self._info.width, self._info.height, self._info.fps, fmt=fmt,
                               device=self.device, backend=self.backend, print_fps=False)

    def _open_camera(self) -> Any:
        if self.alpha and self.fmt == "auto":
            try:  # only a backend that takes RGBA accepts it (Unity Capture); the others refuse at once
                return self._camera(self._pv.PixelFormat.RGBA)
            except Exception as exc:
                log.info("no virtual camera here takes RGBA (%s); sending without alpha",
                         str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        fmt = self._pixel_format()
        try:
            return self._camera(fmt)
        except Exception as exc:
            if self.fmt == "rgba":
                raise UserError(f"no virtual camera takes RGBA here ({str(exc).strip()}); only Unity Capture on "
                                "Windows carries alpha: install it, or set outputs.virtualcam.fmt = 'auto'") from exc
            text = str(exc)
            if "busy" in text.lower() or "in use" in text.lower():
                raise UserError(f"the virtual camera {self.device or ''} is in use by another program ({text}); "
                                "close it or pick another with outputs.virtualcam.device") from exc
            raise UserError(f"no virtual camera could be opened ({text.strip()}); {no_device_help()}") from exc

    def open(self, info: StreamInfo) -> None:
        self._info = info
        self._use(self._open_camera())  # a missing device is reported at once, with the fix
        self._thread = threading.Thread(target=self._send_loop, name="virtualcam", daemon=True)
        self._thread.start()

    def _use(self, camera: Any) -> Any:
        self.camera = camera
        name = str(camera.fmt.name if hasattr(camera.fmt, "name") else camera.fmt).split(".")[-1]
        self.fmt_name = {"RGB": "rgb", "I420": "i420", "NV12": "nv12", "RGBA": "rgba"}.get(name, "rgb")
        return camera

    def write_video(self, frame: VideoFrame) -> None:
        fmt = self.fmt_name
        data = convert(frame.premultiplied() if fmt == "rgba" else frame.rgb, fmt, self.mirror, frame.alpha)
        with self._lock:
            self._latest = (fmt, data)

    def write_audio(self, chunk: AudioChunk) -> None:
        pass  # a camera carries no audio: the delayed passthrough does

    def progress(self) -> tuple[float | None, str | None]:
        """An OutputProbe (PacedSink): when a send last returned. Frames are sent on this sink's own thread,
        so a send hung in the device's driver shows here, while `write_video` goes on returning at once."""
        return self._sent_at, None

    def _send_loop(self) -> None:
        assert self._info is not None
        pacer = FramePacer(self._info.fps)
        delay = self.retry[0]
        while not self._stop.is_set():
            pacer.wait()
            with self._lock:
                latest = self._latest
            if latest is None:
                continue
            try:
                if self.camera is None:
                    camera = self._use(self._open_camera())
                    self.reopens += 1
                    delay = self.retry[0]
                    log.info("virtual camera %s is back", camera.device)
                fmt, data = latest
                if fmt != self.fmt_name:
                    continue  # converted for the camera before a reopen; the next frame comes in this one's format
                self.camera.send(data)
                self.sent += 1
                self._sent_at = time.monotonic()
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
        """Stop sending within a second; a send stuck in the device's driver is left behind with its camera
        (closing a device under a write in progress could block as well)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            if self._thread.is_alive():
                log.warning("the virtual camera did not take a frame for a second; leaving it open")
                return
        self._close_camera()
