"""Packet budgets per sender: a token bucket for each source address in a bounded table.

One budget for the whole port let a flooding sender use it up, and every other sender's packets were dropped
with the flood's. With a bucket per sender, a flood costs only its own packets; a ceiling across all senders
still bounds the parsing work when many senders (or one that keeps changing its source port) send at once.
The table keeps the most recently heard senders; the least recently heard one makes room for a new one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

MAX_SENDERS = 256
CEILING_FACTOR = 4.0  # all senders together may use this many single-sender budgets per second


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
        self._all = TokenBucket(tokens=self.ceiling, time=float("-inf"))
        self.evicted = 0

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
        if entry.packets.take(now, self.rate) and self._all.take(now, self.ceiling):
            return True
        entry.rate_limited += 1
        return False

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
