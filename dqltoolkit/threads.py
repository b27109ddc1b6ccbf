"""How many CPU threads torch should use, for the commands that train or evaluate.

Why not torch's default (one thread per core): on a shared machine the cores are not ours. Measured on
2 cores with another job running, torch's OpenMP pool at 2 threads gave 0.7 (reference) and 1.5 (exact)
steps/s where 1 thread gave 4.6 and 8.2: threads that wait for a busy core stall every parallel region.
``auto`` therefore counts the cores that other work keeps busy now (a quarter-second sample of
/proc/stat, while this process sleeps; the 1-minute load average where there is no /proc/stat, which
lags: right after a heavy job it still counts that job) and leaves them alone; ``OMP_NUM_THREADS`` (a
user's or a scheduler's explicit choice) is always respected.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Tuple

import torch


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu_times() -> Optional[Tuple[int, int]]:
    """(busy, total) jiffies of the whole machine from /proc/stat, or None where it does not exist."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(sample_s: float = 0.25) -> Tuple[float, str]:
    """How many cores other work keeps busy now, and how that was measured."""
    first = _cpu_times()
    if first is not None:
        time.sleep(sample_s)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            share = (second[0] - first[0]) / (second[1] - first[1])
            return share * (os.cpu_count() or 1), f"{share:.0%} of the machine busy"
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # (Windows)
        return 0.0, "no CPU usage to read on this system"
    return load, f"load average {load:.1f}"


def auto_threads() -> Tuple[int, str]:
    """``(threads, why)``: torch's default less the cores other work keeps busy, at least 1."""
    default = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        return default, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    busy, how = busy_cores()
    cores = usable_cores()
    n = max(1, min(default, cores - int(busy + 0.5)))
    return n, f"{cores} cores, {how}"


def set_threads(spec: Optional[str]) -> Tuple[int, str]:
    """Apply ``--threads``: a positive integer, or ``auto``/None (see :func:`auto_threads`). Returns
    ``(threads, why)``; raises ValueError for anything else."""
    if spec is None or str(spec).strip().lower() == "auto":
        n, why = auto_threads()
    else:
        try:
            n = int(spec)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--threads must be a positive integer or 'auto', got {spec!r}")
        why = "--threads"
    torch.set_num_threads(n)
    return n, why


class Threads:
    """``with Threads(spec) as (n, why):`` torch uses ``n`` threads inside, its previous count after
    (so a command run in-process, as tests do, leaves the caller's setting alone)."""

    def __init__(self, spec: Optional[str]) -> None:
        self.spec = spec
        self._before = torch.get_num_threads()

    def __enter__(self) -> Tuple[int, str]:
        self._before = torch.get_num_threads()
        return set_threads(self.spec)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self._before)
