"""Audio streams to and from a PulseAudio (or PipeWire's pulse) server by name, through libpulse's simple API.

PortAudio reaches PulseAudio only as one ALSA device ("pulse"), which cannot choose a sink: to play into a
particular sink (the virtual microphone's) we talk to the server ourselves. libpulse-simple (Debian: libpulse0)
is loaded with ctypes when first used; `latency()` says how long a sample written now takes to be played (or,
recording, how long ago a sample read now was captured), which is what keeps the delayed voice on time.

Every call into libpulse is a ctypes call, which releases the interpreter while it waits: a sound server that
stops answering holds only the thread that called it. `close()` waits for that thread only `CLOSE_WAIT_S`;
past it the stream is left to the process's exit instead of waiting on a server that may never answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError

PLAYBACK, RECORD = 1, 2  # pa_stream_direction_t
FLOAT32LE = 5  # pa_sample_format_t PA_SAMPLE_FLOAT32LE
DEFAULT = 0xFFFFFFFF  # (uint32_t) -1: let the server choose this buffer field
HUNG_FIX = "is the sound server hung? (systemctl --user restart pipewire-pulse, or pulseaudio -k)"
CLOSE_WAIT_S = 0.5  # how long close() waits for a read or write in progress (a hung server never returns)


class PulseError(UserError):
    pass


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [("maxlength", ctypes.c_uint32), ("tlength", ctypes.c_uint32), ("prebuf", ctypes.c_uint32),
                ("minreq", ctypes.c_uint32), ("fragsize", ctypes.c_uint32)]


_lib: Any = None
_lib_lock = threading.Lock()


def _simple() -> Any:
    """libpulse-simple with its prototypes (loaded once)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("pulse-simple") or "libpulse-simple.so.0"
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                raise PulseError("libpulse-simple is not installed; install libpulse0 (Debian/Ubuntu: "
                                 "sudo apt install libpulse0) to play into PulseAudio/PipeWire sinks") from exc
            lib.pa_simple_new.restype = ctypes.c_void_p
            lib.pa_simple_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_char_p, ctypes.POINTER(_SampleSpec), ctypes.c_void_p,
                                          ctypes.POINTER(_BufferAttr), ctypes.POINTER(ctypes.c_int)]
            lib.pa_simple_write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_int)]
            lib.pa_simple_read.argtypes = lib.pa_simple_write.argtypes
            lib.pa_simple_get_latency.restype = ctypes.c_uint64
            lib.pa_simple_get_latency.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
            lib.pa_simple_free.argtypes = [ctypes.c_void_p]
            lib.pa_strerror.restype = ctypes.c_char_p  # from libpulse, which libpulse-simple links
            lib.pa_strerror.argtypes = [ctypes.c_int]
            _lib = lib
        return _lib


def _strerror(code: int) -> str:
    return str(_simple().pa_strerror(code).decode(errors="replace"))


class PulseStream:
    """One mono float32 stream to a sink (playback) or from a source (record), blocking reads and writes."""

    def __init__(self, direction: int, device: str | None, rate: int, latency_s: float = 0.05,
                 name: str = "Avatar Bridge", stream_name: str = "voice") -> None:
        lib = _simple()
        self.rate = rate
        spec = _SampleSpec(FLOAT32LE, rate, 1)
        block = int(rate * latency_s) * 4  # bytes of float32 mono
        if direction == PLAYBACK:  # queue up to latency_s; play from the first 10 ms, refill every 10 ms
            ten_ms = rate // 100 * 4
            attr = _BufferAttr(DEFAULT, block, ten_ms, ten_ms, DEFAULT)
        else:  # hand over what was captured every latency_s / 2
            attr = _BufferAttr(DEFAULT, DEFAULT, DEFAULT, DEFAULT, max(4, block // 2))
        error = ctypes.c_int(0)
        handle = lib.pa_simple_new(None, name.encode(), direction, device.encode() if device else None,
                                   stream_name.encode(), ctypes.byref(spec), None, ctypes.byref(attr),
                                   ctypes.byref(error))
        if not handle:
            what = f"the sound server's {'sink' if direction == PLAYBACK else 'source'} {device!r}" if device \
                else "the sound server"
            raise PulseError(f"cannot open {what}: {_strerror(error.value)}; is PulseAudio or PipeWire running "
                             "(pactl info), and does that device exist (pactl list short sinks)?")
        self._handle: int | None = handle
        self._lock = threading.Lock()

    def _transfer(self, call: str, data: NDArray[np.float32]) -> None:
        """pa_simple_write or pa_simple_read of the whole buffer (blocking), as a PulseError on failure."""
        error = ctypes.c_int(0)
        with self._lock:
            if self._handle is None:
                raise PulseError("the PulseAudio stream is closed")
            result = getattr(_simple(), call)(self._handle, data.ctypes.data, data.nbytes, ctypes.byref(error))
        if result < 0:
            raise PulseError(f"PulseAudio {call.removeprefix('pa_simple_')} failed: {_strerror(error.value)}")

    def write(self, samples: NDArray[np.float32]) -> None:
        """Queue samples for playback (blocks while the server's buffer is full)."""
        self._transfer("pa_simple_write", np.ascontiguousarray(samples, np.float32))

    def read(self, frames: int) -> NDArray[np.float32]:
        """The next `frames` captured samples (blocks until they are there)."""
        out = np.empty(frames, np.float32)
        self._transfer("pa_simple_read", out)
        return out

    def latency(self) -> float:
        """Seconds between writing a sample and hearing it (or between its capture and reading it)."""
        error = ctypes.c_int(0)
        with self._lock:
            if self._handle is None:
                return 0.0
            usec = _simple().pa_simple_get_latency(self._handle, ctypes.byref(error))
        if usec == 0xFFFFFFFFFFFFFFFF:
            raise PulseError(f"PulseAudio latency query failed: {_strerror(error.value)}")
        return usec / 1e6

    def close(self) -> bool:
        """Free the stream; False when a read or write still waits on the server after CLOSE_WAIT_S (the
        server is hung): the stream is then abandoned, never waited on."""
        if not self._lock.acquire(timeout=CLOSE_WAIT_S):
            return False
        try:
            handle, self._handle = self._handle, None
        finally:
            self._lock.release()
        if handle is not None:
            _simple().pa_simple_free(handle)
        return True
