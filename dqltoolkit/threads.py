"""How many CPU threads torch should use, for the commands that train or evaluate.

Why not torch's default (one thread per core): on a shared machine, threads that wait for a busy core stall
every parallel region (on 2 busy cores, 1 thread trained 3-6x faster than 2). ``auto`` leaves alone the cores
other work keeps busy now (a quarter-second sample of /proc/stat, else the lagging 1-minute load average);
``OMP_NUM_THREADS`` (a user's or a scheduler's explicit choice) is always respected.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Tuple

import torch


def usable_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


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

