"""Sizes a user can type, checked before work starts: a stated limit or the machine's memory.

Why: a typo (``batch_size=1000000000``, ``seeds: 0-99999999``) must get one sentence naming the field, its value
and the limit, not an allocator traceback after minutes. Fixed limits are generous; ``DQLTOOLKIT_LIMITS=off``
lifts them, never the memory checks, which only refuse what cannot fit.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

#: seeds trained in one process (each is a full copy of every network)
MAX_SEEDS = 1024
#: parallel environments one evaluation runs at once (seeds x episodes)
MAX_EVAL_ENVS = 10_000
#: bootstrap resamples of a report
MAX_REPS = 1_000_000
#: transitions a dataset build collects per level, and behaviour-training env steps (D4RL: 1M and about 1M)
MAX_BUILD_TRANSITIONS = 20_000_000
MAX_BUILD_BUDGET = 50_000_000
#: trials one sweep file may expand to (sweep files raise it with their own ``max_trials`` field)
MAX_TRIALS = 10_000


class LimitError(ValueError):
    """A size over its limit; the message names the field, the value and the limit."""


def lifted() -> bool:
    """``DQLTOOLKIT_LIMITS=off``: the fixed limits of this module are lifted (memory checks stay)."""
    return os.environ.get("DQLTOOLKIT_LIMITS", "").strip().lower() in ("off", "0", "no", "false")


def check_limit(field: str, value: int, limit: int, why: str = "", remedy: str = "") -> int:
    """Refuse ``value`` above ``limit`` (unless :func:`lifted`)."""
    if value > limit and not lifted():
        tail = f"; {remedy}" if remedy else ""
        raise LimitError(f"{field}={value} is over the limit of {limit}" + (f" ({why})" if why else "") + tail
                         + " (DQLTOOLKIT_LIMITS=off lifts this limit)")
    return value


def available_bytes(device: Any = "cpu") -> Optional[int]:
    """Memory free for new allocations: the GPU's free memory on CUDA, else the kernel's MemAvailable (None if unknown)."""
    if str(device).startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def check_memory(what: str, need: float, device: Any = "cpu", remedy: str = "") -> None:
    """Refuse work that needs more than the memory the device has free (need: a lower estimate, in bytes)."""
    have = available_bytes(device)
    if have is not None and need > have:
        raise LimitError(f"{what} needs at least {gib(need)}, and {device} has {gib(have)} free" + (f": {remedy}" if remedy else ""))


def agent_bytes(config: Mapping[str, Any], obs_dim: int, act_dim: int, members: int) -> tuple[float, float]:
    """A lower estimate of ``(state, step)`` bytes: the networks with their copies (target/EMA, Adam, gradients) and one
    step's activations, from the built-in size keys (a part with other keys is estimated as small, never refused)."""
    def get(key: str, default: int) -> int:
        v = config.get(key, default)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    w_a, l_a = get("hidden", 256), get("n_layers", 3)
    w_c, l_c, n_c = get("critic_hidden", 256), get("critic_layers", 3), max(1, get("n_critics", 2))
    actor = w_a * w_a * max(0, l_a - 1) + w_a * (obs_dim + act_dim + 1)
    critic = n_c * (w_c * w_c * max(0, l_c - 1) + w_c * (obs_dim + act_dim + 1))
    state = 5.0 * 4 * members * (actor + critic)
    batch = get("batch_size", 256)
    step = 2.0 * 4 * members * batch * (w_a * l_a + n_c * w_c * l_c)
    return state, step


def check_agent(config: Mapping[str, Any], obs_dim: int, act_dim: int, members: int, device: Any = "cpu") -> None:
    """Refuse an agent whose networks or training step cannot fit the device's free memory, naming the key to lower."""
    check_limit("seeds", members, MAX_SEEDS, "networks per process", "train fewer seeds per run")
    state, step = agent_bytes(config, obs_dim, act_dim, members)
    sizes = ", ".join(f"{k}={config[k]}" for k in ("hidden", "n_layers", "critic_hidden", "critic_layers", "n_critics") if k in config)
    check_memory(f"{members} seed(s) of networks with {sizes}", state, device, "lower the network sizes or train fewer seeds at once")
    check_memory(f"one training step with batch_size={config.get('batch_size')} ({members} seed(s))", step, device, "lower batch_size")
