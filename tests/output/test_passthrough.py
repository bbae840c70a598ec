"""Delayed audio passthrough: the delay line on real audio (a tone placed by capture time comes out exactly
`delay` later, holes are silence, the delay changes while playing), the API that reports and adjusts it,
per-sink glass-to-glass in the status, and a real PortAudio output (ALSA's pulse device into a PulseAudio
server started for the test) playing the voice `delay_ms` late."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np

from bridge.core.interfaces import AudioChunk
from drivers.output.passthrough import DelayLine
from tests.conftest import require_program
from tests.output.audio_delay import bursts_file, heard_delay_ms
from tests.output.conftest import base_url, running_daemon, wait_until
from tests.output.pulse_server import DEFAULT_SINK, PulseServer

RATE = 16_000


def speech_like(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def test_delay_line_plays_audio_exactly_delay_later() -> None:
    line = DelayLine(RATE, capacity_s=2.0)
    audio = speech_like(1.0)
    t0 = 5.0
    for i in range(0, audio.size, 320):  # 20 ms chunks stamped by capture time
        line.write(AudioChunk(audio[i : i + 320], t0 + i / RATE))
    delay = 0.180
    # The output callback at media time (t0 + delay + x) reads what was captured at t0 + x.
    out = np.concatenate([line.read(t0 + delay + k * 0.01 - delay, 160) for k in range(100)])
    assert np.array_equal(out, audio)
    # Reading a block that begins 7 samples earlier shifts by exactly 7 samples (silence before the start).
    early = line.read(t0 - 7 / RATE, 100)
    assert np.all(early[:7] == 0) and np.array_equal(early[7:], audio[:93])


def test_delay_line_gaps_overwrites_and_underruns() -> None:
    line = DelayLine(RATE, capacity_s=1.0)
    a = speech_like(0.2)
    line.write(AudioChunk(a, 1.0))
    line.write(AudioChunk(a, 1.5))  # 0.3 s hole
    hole = line.read(1.2, int(0.3 * RATE))
    assert not hole.any(), "a hole must play as silence"
    assert np.array_equal(line.read(1.5, a.size), a)
    line.write(AudioChunk(speech_like(1.0), 2.0))  # wraps the 1 s ring: 1.0..1.7 is gone
    assert not line.read(1.0, 100).any()
    before = line.underruns
    tail = line.read(2.95, RATE // 10)  # past what was written: partly silence, counted as an underrun
    assert line.underruns == before + 1 and not tail[RATE // 10 - 10 :].any()


async def test_passthrough_delay_is_reported_and_adjustable_and_per_sink_latency() -> None:
    async with running_daemon() as daemon, aiohttp.ClientSession() as http:
        url = base_url(daemon)
        async with http.get(url + "/api/passthrough") as r:
            body = await r.json()
            assert body["mode"] == "auto" and body["delay_ms"] > 0  # measured, or the pipeline's av_delay
        async with http.post(url + "/api/passthrough", json={"delay_ms": 240}) as r:
            assert (await r.json())["delay_ms"] == 240.0
        assert daemon.config.outputs.passthrough.delay_ms == 240
        async with http.post(url + "/api/passthrough", json={"delay_ms": -5}) as r:
            assert r.status == 400 and "0..5000" in (await r.json())["error"]

        # A real sink on the pipeline gets its own glass-to-glass percentiles in the status.
        class Collect:
            name = "collect"
            frames = 0

            def open(self, info: object) -> None: ...
            def write_video(self, frame: object) -> None:
                Collect.frames += 1
            def write_audio(self, chunk: object) -> None: ...
            def close(self) -> None: ...

        sink = Collect()
        daemon.add_sink(sink)
        try:
            await wait_until(lambda: Collect.frames > 15, 20, "frames at the sink")
        finally:
            daemon.remove_sink(sink)
        async with http.get(url + "/api/status") as r:
            per_sink = (await r.json())["latency_ms"]["per_sink"]
        assert per_sink["collect"]["count"] > 10
        # Frames reach sinks when they are due (A/V delay after capture), less at most the render lead.
        assert per_sink["collect"]["p50_ms"] >= (daemon.av_delay - daemon.pipeline.max_render_lead) * 1000.0 - 1


async def test_passthrough_plays_on_a_portaudio_device_delay_ms_late(pulse: PulseServer, tmp_path: Path) -> None:
    """A real PortAudio output: ALSA's "pulse" device into the test server's default sink, recorded back from
    its monitor; the voice arrives `delay_ms` late (within 20 ms), PortAudio's own latency accounted for."""
    import sounddevice as sd

    sd._terminate()  # PortAudio lists devices once: look again now that a sound server is up
    sd._initialize()
    require_program("ALSA's pulse device", "libasound2-plugins",
                    found=any(d["name"] == "pulse" and d["max_output_channels"] > 0 for d in sd.query_devices()))
    audio = {"source": "file", "file": str(bursts_file(tmp_path)), "realtime": True, "loop": True}
    outputs = {"passthrough": {"enabled": True, "device": "pulse", "delay_ms": 300}}
    async with running_daemon(audio=audio, outputs=outputs) as daemon:
        await wait_until(lambda: daemon.passthrough is not None, 10, "passthrough running")
        assert daemon.passthrough.describe()["running"]
        await heard_delay_ms(daemon, pulse, f"{DEFAULT_SINK}.monitor", 300)
