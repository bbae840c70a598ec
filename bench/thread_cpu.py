"""CPU time of this process by thread, grouped by the thread's name: where a run's cores went, stage by stage.

Linux keeps each thread's user and system time in /proc/self/task/<tid>/stat; Python threads are matched to
their names through `Thread.native_id`. Threads Python did not start (numba's and torch's worker pools, codec
threads) are counted together as "native pools". A name's trailing "-<n>" or "@<detail>" is dropped, so the
four sessions' render threads add up under "render".
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

NATIVE = "native pools (numba, torch, codecs)"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _thread_seconds(tid: int) -> float | None:
    try:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name (in parentheses) may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _group(name: str) -> str:
    name = re.sub(r"@.*$", "", name)
    return re.sub(r"[-_ ]?\d+$", "", name) or name


def snapshot() -> dict[int, tuple[str, float]]:
    """{thread id: (group name, CPU seconds so far)} for every thread of this process now."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = [int(p) for p in os.listdir("/proc/self/task")]
    except OSError:
        return out
    for tid in tids:
        seconds = _thread_seconds(tid)
        if seconds is not None:
            out[tid] = (_group(names[tid]) if tid in names else NATIVE, seconds)
    return out


def by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed by group (threads that started in between count from 0;
    those that ended in between are lost, which a steady run does not have)."""
    out: dict[str, float] = {}
    for tid, (group, seconds) in after.items():
        spent = seconds - before.get(tid, (group, 0.0))[1]
        out[group] = out.get(group, 0.0) + spent
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
