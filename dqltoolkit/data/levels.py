"""The dataset levels the builder writes, and how long each takes: a module of its own so that messages
about a missing dataset can say so without importing the builder (SB3, training code)."""

from __future__ import annotations

LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")


def build_time_estimate(command: str) -> str:
    """How long ``dataset build <env> --levels ...`` takes, for messages that suggest the command.

    Why: "build it here" reads as a moment's work, but the levels differ by three orders of magnitude:
    random data needs no policy; medium trains SAC until it reaches a third of the expert return (150k
    env steps, 24 minutes on 2 CPU cores for hopper); expert levels train the whole default budget.
    """
    words = command.split()
    levels = words[words.index("--levels") + 1].split(",") if "--levels" in words[:-1] else list(LEVELS)
    if all(lv == "random" for lv in levels):
        return "seconds: random actions, no training"
    if any("expert" in lv for lv in levels):
        return "about 50 minutes of SAC training on 2 CPU cores, the full --budget of 300k env steps; resumable"
    return "tens of minutes of SAC training, about 25 on 2 CPU cores for hopper; resumable"
