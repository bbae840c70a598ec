"""Packet budgets per sender: a token bucket for each source address in a bounded table.

One budget for the whole port let a flooding sender use it up, and every other sender's packets were dropped
with the flood's. With a bucket per sender, a flood costs only its own packets; a ceiling across all senders
still bounds the parsing work when many senders (or one that keeps changing its source port) send at once.
The ceiling is shared out, not first come first served: in each short window every sender heard may use an
equal share of it (with room left for one newcomer), so sixteen flooding source ports spend their own shares
and a seventeenth sender is still heard. The table keeps the most recently heard senders; the least recently
heard one makes room for a new one.

A refused sender is remembered until its budget or share can next admit a packet (`holds`): until then its
packets are refused by one dictionary lookup (`held`), so reading a flood costs little more than the read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

MAX_SENDERS = 256
CEILING_FACTOR = 4.0  # all senders together may use this many single-sender budgets per second
WINDOW = 0.1  # seconds over which the ceiling is shared out among the senders heard


@dataclass
class TokenBucket:
    """Up to `rate` tokens, refilled at `rate` per second."""

    tokens: float
    time: float

    def take(self, now: float, rate: float) -> bool:
        self.tokens = min(rate, self.tokens + (now - self.time) * rate)
        self.time = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Sender:
    """One sender's packet and reply budgets and what it did with them."""

    packets: TokenBucket
    replies: TokenBucket
    sent: int = 0
    rate_limited: int = 0
    window: int = -1  # the sharing window it last sent in, and how much of the ceiling it used there
    used: int = 0


class SenderBudgets:
    """`take(sender)` is True while that sender is within `rate` packets per second (bursts up to one second's
    worth) and all senders together within `ceiling`; counts what was refused."""

    def __init__(self, rate: float, reply_rate: float, max_senders: int = MAX_SENDERS,
                 ceiling: float | None = None) -> None:
        self.rate = float(rate)
        self.reply_rate = float(reply_rate)
        self.max_senders = int(max_senders)
        self._table: OrderedDict[Hashable, Sender] = OrderedDict()
        self.ceiling = float(ceiling if ceiling is not None else self.rate * CEILING_FACTOR)
        self.evicted = 0
        self._window = 0
        self._window_end = float("-inf")
        self._heard_before = 0  # senders heard in the previous window
        self._heard = 0  # senders heard so far in this one
        self._used = 0
        self.holds: dict[Hashable, list[float]] = {}  # refused sender -> [refused until, packets refused since]

    def _sender(self, sender: Hashable, now: float) -> Sender:
        entry = self._table.get(sender)
        if entry is None:
            if len(self._table) >= self.max_senders:
                self._table.popitem(last=False)
                self.evicted += 1
            entry = Sender(TokenBucket(self.rate, now), TokenBucket(self.reply_rate, now))
            self._table[sender] = entry
        else:
            self._table.move_to_end(sender)
        return entry

    def take(self, sender: Hashable, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        entry = self._sender(sender, now)
        entry.sent += 1
        if entry.packets.take(now, self.rate) and self._share(entry, now):
            return True
        entry.rate_limited += 1
        if len(self.holds) >= self.max_senders:
            for held_sender in [h for h, hold in self.holds.items() if hold[0] <= now]:  # senders gone quiet
                self._release(held_sender)
        if len(self.holds) < self.max_senders:
            tokens = entry.packets.tokens
            self.holds[sender] = [now + (1.0 - tokens) / self.rate if tokens < 1.0 else self._window_end, 0.0]
        return False

    def held(self, sender: Hashable, now: float) -> bool:
        """True (and counted) while `sender` is still refused since its last refusal: no need to ask `take`."""
        hold = self.holds.get(sender)
        if hold is None:
            return False
        if now < hold[0]:
            hold[1] += 1.0
            return True
        self._release(sender)
        return False

    def _release(self, sender: Hashable) -> None:
        """End a hold, adding the packets it refused to the sender's counts."""
        refused = int(self.holds.pop(sender)[1])
        entry = self._table.get(sender)
        if entry is not None:
            entry.sent += refused
            entry.rate_limited += refused

    def _share(self, entry: Sender, now: float) -> bool:
        """Within the ceiling and within this sender's equal share of it in the current window."""
        if now >= self._window_end:
            self._window += 1
            self._window_end = now + WINDOW
            self._heard_before, self._heard, self._used = self._heard, 0, 0
        if entry.window != self._window:
            entry.window, entry.used = self._window, 0
            self._heard += 1
        allowance = self.ceiling * WINDOW
        share = max(1.0, allowance / (max(self._heard_before, self._heard) + 1))  # + 1: room for a newcomer
        if entry.used + 1 > share or self._used + 1 > allowance:
            return False
        entry.used += 1
        self._used += 1
        return True

    def take_reply(self, sender: Hashable, now: float | None = None) -> bool:
        """A reply to `sender` within its own reply budget (queries cannot be turned into a reply flood)."""
        now = time.monotonic() if now is None else now
        return self._sender(sender, now).replies.take(now, self.reply_rate)

    def __len__(self) -> int:
        return len(self._table)

    def busiest(self, n: int = 32) -> list[dict[str, Any]]:
        """The `n` senders that sent most, for the status page."""
        top = sorted(self._table.items(), key=lambda kv: kv[1].sent, reverse=True)[:n]
        return [{"address": _describe(sender), "packets": e.sent, "rate_limited": e.rate_limited}
                for sender, e in top]


def _describe(sender: Hashable) -> str:
    if isinstance(sender, tuple) and len(sender) >= 2:
        host = str(sender[0])
        return f"[{host}]:{sender[1]}" if ":" in host else f"{host}:{sender[1]}"
    return str(sender)
