import os

import gymnasium as gym
import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from dqltoolkit import Agent, AgentConfig  # noqa: E402

TINY = dict(T=3, hidden=16, critic_hidden=16, time_dim=8, batch_size=32, n_candidates=8, ema_start=0, log_every=10)


def tiny_config(**kw) -> AgentConfig:
    """Tiny sizes for whichever parts ``kw`` names (keys those parts do not read are left out), then ``kw``."""
    parts = {k: kw.pop(k) for k in ("head", "critic", "objective") if k in kw}
    return AgentConfig(**parts).fit(**TINY).replace(**kw)


def random_table(n=200, obs_dim=3, act_dim=2, seed=0):
    from dqltoolkit.bench.throughput import hopper_table

    return hopper_table(n, obs_dim, act_dim, seed=seed, terminal_prob=0.1)


@pytest.fixture(autouse=True)
def one_thread_per_worker(request):
    """Under pytest-xdist (`make test`: two workers on two cores) every test gets one intra-op thread, so
    the workers never put three threads on two cores: a two-thread test beside a one-thread learning
    run was measured 30x slower (the dataset builder's tests: 180 s instead of 6 s). Tests that need two
    threads (the fused operators' paired-seed path) ask for them with ``@pytest.mark.two_threads``."""
    import torch

    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(2 if request.node.get_closest_marker("two_threads") else 1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def spaces():
    return gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32)


@pytest.fixture
def tiny_agent(spaces):
    agent = Agent(tiny_config(), *spaces, seeds=[0], device="cpu")
    agent.set_dataset(random_table())
    return agent


_STOP_SIGNALS = ("SIGINT", "SIGTERM")


@pytest.fixture(autouse=True)
def signal_dispositions_are_restored(request):
    """Each test starts with the process's own SIGINT/SIGTERM handlers and signal mask. A library a test drives
    in-process (Ray's node start-up installs its own SIGTERM handler) must not leave a disposition behind:
    an ignored SIGINT is inherited by every subprocess a later test starts in this worker, and a replaced
    handler swallows the signals the fault tests send. Changes are undone and written to
    $DQLTOOLKIT_SIGNAL_LOG (when set) with the test's name, so the culprit can be found."""
    import signal

    # a shell starts background jobs (`make test &`, nohup) with SIGINT ignored, and Python then installs no
    # handler: the stop-signal tests need it acted on, as in a terminal (children inherit the default again)
    inherited = signal.getsignal(signal.SIGINT)
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    before = {name: signal.getsignal(getattr(signal, name)) for name in _STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    ignored = _os_ignored()
    yield
    after = {name: signal.getsignal(getattr(signal, name)) for name in _STOP_SIGNALS}
    changed = {name: (before[name], after[name]) for name in _STOP_SIGNALS if after[name] is not before[name]}
    # native code (Ray's C++ core) may set a disposition behind Python's back: the kernel's view decides
    for name in _STOP_SIGNALS:
        if name in _os_ignored() - ignored:
            changed.setdefault(name, (before[name], "SIG_IGN (set by native code)"))
    now_mask = signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if changed or now_mask != mask:
        for name, (old, _) in changed.items():
            if old is not None:
                signal.signal(getattr(signal, name), old)
        log = os.environ.get("DQLTOOLKIT_SIGNAL_LOG")  # (where a test left a disposition behind)
        if log:
            with open(log, "a") as f:
                f.write(f"{request.node.nodeid}: {changed} mask {mask} -> {now_mask}\n")
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _os_ignored() -> set:
    """The stop signals this process ignores, as the kernel sees it (/proc/self/status SigIgn)."""
    import signal

    try:
        with open("/proc/self/status") as f:
            bits = int(next(ln.split()[1] for ln in f if ln.startswith("SigIgn:")), 16)
    except (OSError, StopIteration, ValueError):
        return set()
    return {name for name in _STOP_SIGNALS if bits >> (getattr(signal, name) - 1) & 1}
