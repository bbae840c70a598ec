"""The watchdog's verdicts on a simulated clock: quiet for more than two seconds is stalled, an ended input is
done, a sink that gave up is failed, a removed sink is forgotten, and nothing is stalled before the start or
after the stop."""

from __future__ import annotations

from bridge.runtime.watchdog import Watchdog


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def states(dog: Watchdog) -> dict[str, str]:
    return {name: info["state"] for name, info in dog.report()["stages"].items()}


def test_stalled_done_failed_and_forgotten() -> None:
    clock = Clock()
    dog = Watchdog(stall_after=2.0, now=clock)
    assert dog.report()["ok"]  # nothing watched yet
    dog.start()
    dog.watch("sink:recorder")
    clock.t += 1.9
    assert dog.report()["ok"]  # a stage that has not produced yet gets the same two seconds from the start
    for stage in ("audio", "face", "clock", "render", "sink:recorder"):
        dog.beat(stage)
    clock.t += 1.0
    dog.beat("audio")
    dog.beat("clock")
    clock.t += 1.5  # render, face and the recorder quiet for 2.5 s; audio and clock for 1.5 s
    report = dog.report()
    assert not report["ok"]
    assert states(dog) == {"audio": "ok", "face": "stalled", "clock": "ok", "render": "stalled",
                           "sink:recorder": "stalled"}
    render = report["stages"]["render"]
    assert render["last_frame_s_ago"] == 2.5 and render["since"].endswith("+00:00")
    assert {s["stage"] for s in report["stalled"]} == {"face", "render", "sink:recorder"}

    dog.done("face")  # its audio ran out: silence is no fault
    dog.fail("sink:recorder", "the disk is full")
    dog.beat("render")
    report = dog.report()
    assert states(dog)["face"] == "done" and states(dog)["render"] == "ok"
    assert report["stalled"] == [{"stage": "sink:recorder", **report["stages"]["sink:recorder"]}]
    assert report["stages"]["sink:recorder"]["error"] == "the disk is full"
    dog.forget("sink:recorder")
    assert dog.report()["ok"]
    clock.t += 10.0
    dog.stop()
    assert dog.report()["ok"]  # a stopped pipeline is not stalled


class Progress:
    """What a followed output says of itself: its last progress and why it gave up."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.why: str | None = None

    def probe(self) -> tuple[float | None, str | None]:
        return self.at, self.why


def test_followed_outputs_and_notes() -> None:
    """An output that runs by itself (the voice, a publisher) is asked at each report: its last progress makes
    it ok or stalled, a reason to give up makes it failed until it works again; a note says where a stage is."""
    clock = Clock()
    dog = Watchdog(stall_after=2.0, now=clock)
    dog.start(())
    voice = Progress()
    dog.follow("voice", voice.probe)
    clock.t += 1.0
    voice.at = clock.t
    clock.t += 1.5
    assert states(dog) == {"voice": "ok"}
    clock.t += 1.0  # 2.5 s without the device taking samples
    assert states(dog) == {"voice": "stalled"}
    voice.why = "the delayed voice stopped playing: connection terminated"
    report = dog.report()
    assert report["stalled"][0]["state"] == "failed" and report["stalled"][0]["error"] == voice.why
    voice.why, voice.at = None, clock.t
    assert states(dog) == {"voice": "ok"}
    dog.watch("sink:recorder")
    dog.note("sink:recorder", "opening")
    clock.t += 2.5
    assert dog.report()["stages"]["sink:recorder"] == {**dog.report()["stages"]["sink:recorder"],
                                                       "state": "stalled", "doing": "opening"}
    dog.note("sink:recorder", None)
    dog.forget("voice")
    assert "doing" not in dog.report()["stages"]["sink:recorder"] and "voice" not in dog.report()["stages"]
