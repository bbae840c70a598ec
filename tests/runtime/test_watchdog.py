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
