"""The bitrate-tier policy on a simulated clock: down on repeated falling estimates below what the tier sends
or on sustained loss, never for an estimate that is merely still ramping up, nor for one low report or right
after a change; probes back up with a growing wait."""

from __future__ import annotations

from collections.abc import Callable

from drivers.output.webrtc.tiers import TierPolicy, tier_bitrates


def test_tier_bitrates_halve_down_to_a_floor() -> None:
    assert tier_bitrates(2_500_000, 3) == [2_500_000, 1_250_000, 625_000]
    assert tier_bitrates(400_000, 4) == [400_000, 200_000, 150_000]
    assert tier_bitrates(150_000, 3) == [150_000]
    assert tier_bitrates(1_000_000, 1) == [1_000_000]


def feed(policy: TierPolicy, estimate: Callable[[int], float], sent: float, start: float, seconds: float,
         every: float = 0.25) -> list[tuple[float, int]]:
    """REMB reports every `every` s (the k-th one `estimate(k)`), polling as frames would; returns the
    (time, new tier) of every change."""
    changes = []
    k = 0
    t = start
    while t < start + seconds - 1e-9:
        for tier in (policy.on_estimate(estimate(k), sent, t), policy.poll(t)):
            if tier is not None:
                changes.append((round(t, 2), tier))
        t += every
        k += 1
    return changes


def falling(start: float) -> Callable[[int], float]:
    """A congested receiver: each estimate 15 % below the one before."""
    return lambda k: start * 0.85**k


def test_repeated_falling_estimates_move_down_one_tier_at_a_time() -> None:
    policy = TierPolicy(tiers=3, hold=1.0, settle=2.0, probe_after=100.0)
    assert feed(policy, lambda k: 2_000_000, 1_000_000, 0.0, 5.0) == []  # room to spare
    changes = feed(policy, falling(700_000), 1_000_000, 5.0, 10.0)
    assert [tier for _, tier in changes] == [1, 2]
    first, second = changes[0][0], changes[1][0]
    assert 6.0 <= first <= 6.5  # two falls below the line, held one second
    assert second - first >= 2.0 + 1.0 - 1e-9  # settle, then hold again
    assert feed(policy, falling(100_000), 1_000_000, 16.0, 5.0) == []  # the bottom tier stays


def test_an_estimate_still_ramping_up_is_not_congestion() -> None:
    # The stream's rate jumped (the head started talking); the receiver's estimate climbs 8 %/s from far below.
    policy = TierPolicy(tiers=3, hold=1.0)
    assert feed(policy, lambda k: 20_000 * 1.08 ** (k / 4), 1_000_000, 0.0, 30.0) == []
    # A flat estimate below the stream (a receiver holding after one overuse) is no proof either.
    assert feed(policy, lambda k: 500_000, 1_000_000, 30.0, 30.0) == []


def test_one_low_report_among_good_ones_changes_nothing() -> None:
    policy = TierPolicy(tiers=3, hold=1.0)
    assert feed(policy, lambda k: 100_000 if k % 3 == 0 else 2_000_000, 1_000_000, 0.0, 20.0) == []


def test_sustained_loss_moves_down_and_light_loss_does_not() -> None:
    policy = TierPolicy(tiers=2, hold=2.0)
    assert all(policy.on_loss(0.05, t * 1.0) is None for t in range(10))  # 5 %: tolerated
    assert policy.on_loss(0.3, 10.0) is None and policy.on_loss(0.0, 11.0) is None  # one burst, then clean
    assert policy.on_loss(0.3, 12.0) is None and policy.on_loss(0.2, 13.0) is None
    assert policy.on_loss(0.25, 14.0) == 1 and policy.tier == 1


def test_probes_up_and_backs_off_when_the_probe_fails() -> None:
    policy = TierPolicy(tiers=3, hold=1.0, settle=0.5, probe_after=10.0, probe_hold=5.0, probe_max=40.0)
    down = feed(policy, falling(700_000), 1_000_000, 0.0, 1.75)
    assert [tier for _, tier in down] == [1]
    t_down = down[0][0]
    # Good estimates from now on: after probe_after it tries the tier above.
    up = feed(policy, lambda k: 900_000, 600_000, t_down, 12.0)
    assert up == [(round(t_down + 10.0, 2), 0)]
    t_up = up[0][0]
    # The probe fails (congestion again within probe_hold): back down, and the next probe waits twice as long.
    again = feed(policy, falling(700_000), 1_000_000, t_up + 0.5, 1.75)
    assert [tier for _, tier in again] == [1]
    t_again = again[0][0]
    assert policy.probe_wait == 20.0
    probe = feed(policy, lambda k: 900_000, 600_000, t_again, 25.0)
    assert probe == [(round(t_again + 20.0, 2), 0)]
    # This probe holds: the wait resets for next time.
    feed(policy, lambda k: 900_000, 600_000, probe[0][0], 6.0)
    assert policy.probe_wait == 10.0 and policy.tier == 0
