"""Congestion control for viewers of shared encoders: bitrate tiers instead of one encoder per viewer.

The daemon runs up to `webrtc.tiers` encoders of one stream, each at half the bitrate of the one above
(started only while someone watches them). Every viewer starts on the top tier; its receiver's RTCP decides
where it stays. A shared encoder cannot follow one receiver's estimate, so the estimate is read as evidence
of congestion, not as a target:

- A receiver estimate (REMB) only ever *falls* when the receiver detected overuse (its delay-based estimator
  then sets it to 0.85 x what arrived); while all is well it climbs slowly from what arrives, so it often sits
  below a stream whose rate just jumped (the head starts talking) without anything being wrong. Evidence is
  therefore an estimate that fell and is below `margin` x the tier's measured send rate; the viewer moves one
  tier down when such evidence repeats (`falls` times) and lasts `hold` seconds with no estimate back above
  the line in between.
- Loss: receiver reports with more than `loss_high` of the packets lost for `hold` seconds (the loss-based
  rule of WebRTC senders) also move it down; a report under `loss_low` clears that.
- Up: an estimate cannot show room for a rate that is not being sent, so a viewer below the top probes:
  after `probe_after` seconds it tries the tier above. A probe that falls back down within `probe_hold`
  seconds doubles the wait (up to `probe_max`); one that holds resets it.

Reports in the `settle` seconds after a change still describe the old stream and are ignored. A change
switches the viewer to the other encoder at its next keyframe (requested at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def tier_bitrates(top_bps: int, tiers: int, floor_bps: int = 150_000) -> list[int]:
    """Nominal bitrates, top first: each half the one above, never below `floor_bps`; repeats are dropped."""
    rates: list[int] = []
    for i in range(max(1, tiers)):
        rate = max(floor_bps, top_bps >> i)
        if rates and rate >= rates[-1]:
            break
        rates.append(rate)
    return rates


@dataclass
class TierPolicy:
    tiers: int
    hold: float = 2.0
    margin: float = 0.8
    falls: int = 2
    loss_high: float = 0.10
    loss_low: float = 0.02
    probe_after: float = 15.0
    probe_max: float = 120.0
    probe_hold: float = 5.0
    settle: float = 2.0
    tier: int = 0
    changes: int = 0
    last_estimate: float | None = None
    below_since: float | None = None
    fell: int = 0
    lossy_since: float | None = None
    last_change: float | None = None
    next_probe: float | None = None
    probe_started: float | None = None
    probe_wait: float = field(init=False)

    def __post_init__(self) -> None:
        self.probe_wait = self.probe_after

    def _settling(self, now: float) -> bool:
        return self.last_change is not None and now - self.last_change < self.settle

    def on_estimate(self, estimate_bps: float, sent_bps: float, now: float) -> int | None:
        """A receiver estimate (REMB); returns the new tier when the viewer should move down, else None."""
        previous, self.last_estimate = self.last_estimate, estimate_bps
        if self._settling(now) or sent_bps <= 0 or estimate_bps >= self.margin * sent_bps:
            self.below_since, self.fell = None, 0
            return None
        if previous is not None and estimate_bps < 0.98 * previous:
            self.fell += 1
            if self.below_since is None:
                self.below_since = now
        if self.below_since is None or self.fell < self.falls or now - self.below_since < self.hold:
            return None
        return self._down(now)

    def on_loss(self, fraction_lost: float, now: float) -> int | None:
        """A receiver report's fraction of packets lost (0..1); returns the new tier when moving down."""
        if self._settling(now) or fraction_lost < self.loss_low:
            self.lossy_since = None
            return None
        if fraction_lost < self.loss_high:
            return None
        if self.lossy_since is None:
            self.lossy_since = now
        if now - self.lossy_since < self.hold:
            return None
        return self._down(now)

    def poll(self, now: float) -> int | None:
        """Call often (every frame); returns the tier above when it is time to probe it, else None."""
        if self.probe_started is not None and now - self.probe_started >= self.probe_hold:
            self.probe_started = None  # the probe held
            self.probe_wait = self.probe_after
        if self.tier == 0 or self.next_probe is None or now < self.next_probe:
            return None
        if self.below_since is not None or self.lossy_since is not None:
            return None
        tier = self._move(self.tier - 1, now)
        self.probe_started = now
        return tier

    def _down(self, now: float) -> int | None:
        if self.tier >= self.tiers - 1:
            return None
        failed_probe = self.probe_started is not None and now - self.probe_started < self.probe_hold
        self.probe_wait = min(self.probe_wait * 2.0, self.probe_max) if failed_probe else self.probe_after
        self.probe_started = None
        return self._move(self.tier + 1, now)

    def _move(self, tier: int, now: float) -> int:
        self.tier = tier
        self.below_since, self.fell, self.lossy_since = None, 0, None
        self.last_change = now
        self.changes += 1
        self.next_probe = now + self.probe_wait if tier > 0 else None
        return tier
