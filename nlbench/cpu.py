"""CPU threads for a run: what is fast for its size on this machine now (``threads=null``). Below the
runner and the launcher, imports nothing of nlbench."""
from __future__ import annotations

import os


def auto_threads(*, small: bool, cores: int, load: float | None) -> int:
    """CPU threads for a run with ``threads=null``: 1 for a small model (digits' MLP, ``scale=smoke``: its
    ops are too small to split), else the cores the machine leaves idle (``cores`` minus ``load``, the
    cores other work keeps busy, rounded; at least 1). On a shared machine a second thread that must wait
    for a busy core slows every step many times over (measured: docs/performance.md, "Threads"), so a
    busy machine gets one thread."""
    if small or cores <= 1:
        return 1
    if load is None:          # no load average (not Unix): every core, torch's own default
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is none (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_load(sample_s: float = 0.5) -> float | None:
    """How many cores other work keeps busy now: the busy share of every CPU over ``sample_s`` seconds
    (/proc/stat) times the core count; elsewhere the 1-minute load average; None when neither is known.
    Sampled, not averaged: a 1-minute load average still counts this process's own previous run of a
    sweep, and would hold every later run of an idle machine at one thread."""
    import time

    a = _cpu_times()
    if a is not None:
        time.sleep(sample_s)
        b = _cpu_times()
        if b is not None and b[1] > a[1]:
            return (os.cpu_count() or 1) * (b[0] - a[0]) / (b[1] - a[1])
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
