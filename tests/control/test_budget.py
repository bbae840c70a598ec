"""Per-sender packet budgets: a flooding sender spends only its own budget, the table of senders stays bounded,
and replies have their own budget per sender."""

from __future__ import annotations

from drivers.control.budget import SenderBudgets


def test_a_flood_spends_only_its_own_budget() -> None:
    budgets = SenderBudgets(rate=100, reply_rate=10)
    now = 1000.0
    flood = quiet = 0
    for step in range(200):  # two seconds in steps of 10 ms
        t = now + step * 0.01
        flood += sum(budgets.take(("127.0.0.1", 5000), t) for _ in range(500))
        if step % 5 == 0:
            quiet += budgets.take(("127.0.0.1", 6000), t)
    assert quiet == 40  # every packet of the calm sender got through
    assert flood <= 100 + 2 * 100 + 1  # its first second's burst and then its rate
    table = {s["address"]: s for s in budgets.busiest()}
    assert table["127.0.0.1:6000"]["rate_limited"] == 0
    assert table["127.0.0.1:5000"]["rate_limited"] == 200 * 500 - flood


def test_all_senders_together_stay_under_the_ceiling() -> None:
    budgets = SenderBudgets(rate=100, reply_rate=10, ceiling=250)
    passed = sum(budgets.take(("10.0.0.1", port), 5.0 + step * 0.01) for step in range(100) for port in range(100))
    assert 200 <= passed <= 250  # one second: the ceiling, shared out


def test_the_ceiling_is_shared_so_sixteen_flooding_ports_leave_room_for_another_sender() -> None:
    budgets = SenderBudgets(rate=2000, reply_rate=10)  # the ceiling: 4 x 2000 per second
    flood = calm = 0
    for step in range(300):  # three seconds in steps of 1 ms; each flooding port sends 10 per step
        t = 100.0 + step * 0.001
        flood += sum(budgets.take(("127.0.0.1", 40_000 + port), t) for port in range(16) for _ in range(10))
        if step % 50 == 49:
            calm += budgets.take(("127.0.0.1", 9999), t)
    assert calm == 6  # every packet of the calm sender
    assert flood <= 3 * budgets.ceiling + 1
    assert {s["address"]: s for s in budgets.busiest(17)}["127.0.0.1:9999"]["rate_limited"] == 0


def test_a_refused_sender_is_held_until_its_budget_refills_and_counted() -> None:
    budgets = SenderBudgets(rate=10, reply_rate=10, ceiling=1000)  # its own budget, not its share, runs out
    sender = ("127.0.0.1", 5000)
    assert sum(budgets.take(sender, 1.0) for _ in range(10)) == 10
    assert not budgets.take(sender, 1.0)  # the bucket is empty: held for a tenth of a second
    assert budgets.held(sender, 1.05) and budgets.held(sender, 1.09)
    assert not budgets.held(sender, 1.11) and budgets.take(sender, 1.11)  # refilled: asked again, and admitted
    entry = {s["address"]: s for s in budgets.busiest()}["127.0.0.1:5000"]
    assert entry == {"address": "127.0.0.1:5000", "packets": 14, "rate_limited": 3}


def test_the_table_of_senders_is_bounded() -> None:
    budgets = SenderBudgets(rate=100, reply_rate=10, max_senders=16)
    for port in range(1000):
        budgets.take(("127.0.0.1", port), 1.0 + port * 0.01)
    assert len(budgets) == 16 and budgets.evicted == 1000 - 16
    # The most recently heard senders are kept.
    assert {s["address"] for s in budgets.busiest(16)} == {f"127.0.0.1:{p}" for p in range(984, 1000)}
    assert budgets.busiest(1)[0]["address"].startswith("127.0.0.1:")


def test_replies_have_a_budget_per_sender() -> None:
    budgets = SenderBudgets(rate=1000, reply_rate=10)
    a = sum(budgets.take_reply(("::1", 1), 3.0) for _ in range(100))
    b = sum(budgets.take_reply(("::1", 2), 3.0) for _ in range(5))
    assert (a, b) == (10, 5)
    assert SenderBudgets(1, 1).busiest() == []


def test_holds_of_senders_gone_quiet_make_room() -> None:
    budgets = SenderBudgets(rate=1, reply_rate=1, max_senders=4, ceiling=1000)
    for port in range(4):  # each spends its one packet, then is refused and held
        budgets.take(("10.0.0.1", port), 1.0)
        budgets.take(("10.0.0.1", port), 1.0)
    assert len(budgets.holds) == 4
    budgets.take(("10.0.0.2", 1), 5.0)
    budgets.take(("10.0.0.2", 1), 5.0)  # the four holds ran out long ago: released, and this one held
    assert list(budgets.holds) == [("10.0.0.2", 1)]
