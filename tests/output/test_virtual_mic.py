"""The virtual microphone against a real PulseAudio server (started here, no hardware): the daemon makes the
"Avatar Bridge Mic" source and its sink, plays the delayed voice into it, and removes both on exit. What a
call app would record from that source is the input, `delay_ms` late (± 20 ms): bursts captured by the
daemon are found again in a recording of that source (tests.output.audio_delay). Without a sound server
the error is one line with a fix and the daemon runs on."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from bridge.commands.doctor import check_sound_server
from bridge.core.errors import UserError
from drivers.output.virtual_mic import MIC_NAME, SINK, SOURCE, VirtualMic, VirtualMicError
from tests.conftest import needs_program
from tests.output.audio_delay import bursts_file, heard_delay_ms
from tests.output.conftest import running_daemon, wait_until
from tests.output.pulse_server import PulseServer

DELAY_MS = 300.0


def modules(server: PulseServer) -> str:
    return server.pactl("list", "short", "modules")


async def test_virtual_mic_plays_the_voice_delay_ms_late_and_is_removed(pulse: PulseServer, tmp_path: Path) -> None:
    audio = {"source": "file", "file": str(bursts_file(tmp_path)), "realtime": True, "loop": True}
    outputs = {"passthrough": {"create": True, "delay_ms": DELAY_MS}}
    async with running_daemon(audio=audio, outputs=outputs) as daemon:
        assert daemon.virtual_mic is not None, pulse.log_tail()
        sources = pulse.pactl("list", "sources")
        assert f"Name: {SOURCE}" in sources and f"Description: {MIC_NAME}\n" in sources
        assert f"\t{SINK}\t" in pulse.pactl("list", "short", "sinks")
        await wait_until(lambda: daemon.passthrough is not None and daemon.passthrough.describe()["running"], 20,
                         "the passthrough playing")
        assert daemon.passthrough.describe()["device"] == f"pulse:{SINK}"

        await heard_delay_ms(daemon, pulse, SOURCE, DELAY_MS)  # what a call app records, DELAY_MS late
    # Gone on exit: no module of ours is left on the server.
    assert SINK not in modules(pulse) and SOURCE not in modules(pulse)


def test_virtual_mic_replaces_leftovers_and_removes_what_it_made(pulse: PulseServer) -> None:
    assert check_sound_server().status == "OK"  # what `avatar-bridge doctor` reports
    # A daemon that was killed left its sink behind: a new one unloads it instead of stacking a copy.
    pulse.pactl("load-module", "module-null-sink", f"sink_name={SINK}")
    mic = VirtualMic()
    mic.create()
    try:
        sinks = [line.split("\t")[1] for line in pulse.pactl("list", "short", "sinks").splitlines()]
        assert sinks.count(SINK) == 1 and len(mic.modules) == 2
    finally:
        mic.remove()
    assert SINK not in modules(pulse) and SOURCE not in modules(pulse)
    mic.remove()  # twice is harmless


@needs_program("pactl", "pulseaudio-utils")  # the client only: no server is the point
async def test_no_sound_server_is_one_line_with_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path / 'nobody-here'}")
    with pytest.raises(VirtualMicError) as err:
        VirtualMic().create()
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert "no PulseAudio or PipeWire sound server answers" in message and "create = false" in message
    doctor = check_sound_server()
    assert doctor.status == "FAIL" and "pipewire-pulse" in doctor.fix
    with contextlib.ExitStack():
        async with running_daemon(outputs={"passthrough": {"create": True}}) as daemon:
            assert daemon.virtual_mic is None and daemon.passthrough is None  # the daemon runs on without it
