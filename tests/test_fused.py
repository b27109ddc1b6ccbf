"""The fused CPU operators (dqltoolkit/csrc/fused.cpp) compute what the eager layer-by-layer path does."""

import os
import shutil

import pytest
import torch

from dqltoolkit._native import fused_ops
from dqltoolkit.backends import fused_cpu
from dqltoolkit.backends.fused_cpu import critic_regression, install_mlp_kernels
from dqltoolkit.critics.double_q import DoubleQCritic
from dqltoolkit.critics.ensemble_q import td_error_loss
from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.nn import EnsembleMLP, member_generators

needs_fused = pytest.mark.skipif(fused_ops() is None, reason="fused operators could not be built here")


pytestmark = pytest.mark.two_threads  # multi-seed cases run seeds in pairs only with two threads


@pytest.fixture
def eager(monkeypatch):
    """Run the block under test on the eager path."""

    def use_eager():
        monkeypatch.setattr(fused_cpu, "applicable", lambda *tensors: None)
        monkeypatch.setenv("DQLTOOLKIT_FUSED", "0")  # agents built from now on choose the eager backend

    return use_eager


def _fused(module):
    """``module``'s Mish networks on the fused MLP kernel, as the fused CPU backend installs it (the
    ``eager`` fixture then sends them back to their torch layers)."""
    assert install_mlp_kernels(fused_ops(), [module]) > 0
    return module


def _grads(module, out, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    module.zero_grad(set_to_none=True)
    (out * g).sum().backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _assert_close(a, b, rtol=2e-5, atol=2e-6):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_fused_library_builds_where_a_compiler_exists():
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    ops = fused_ops()
    assert ops is not None, "csrc/fused.cpp did not build against the installed torch"
    assert hasattr(ops, "chain_fwd") and hasattr(ops, "mlp_bwd")


@needs_fused
@pytest.mark.parametrize("members,steps", [(1, None), (3, None), (2, 2)])
def test_reverse_chain_matches_eager_values_and_gradients(members, steps, eager):
    head = _fused(DiffusionHead(11, 3, members=members, T=5))
    head.reset_parameters(member_generators(list(range(members))))
    obs = torch.randn(members, 64, 11, generator=torch.Generator().manual_seed(0))
    K = len(head.chain(steps or 0)["t"])
    # large noise drives many x0 estimates and end points into the clamp, so its gradient mask matters
    noise = 1.5 * torch.randn(members, K, 64, 3, generator=torch.Generator().manual_seed(2))
    x_fused = head.sample(obs, None, noise=noise, steps=steps)
    assert 0.2 < (x_fused.abs() >= 1).float().mean() < 0.8
    g_fused = _grads(head, x_fused)
    with torch.no_grad():
        x_nograd = head.sample(obs, None, noise=noise, steps=steps)
    eager()
    x_eager = head.sample(obs, None, noise=noise, steps=steps)
    g_eager = _grads(head, x_eager)
    torch.testing.assert_close(x_fused, x_eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_nograd, x_eager.detach(), rtol=1e-5, atol=1e-6)
    _assert_close(g_fused, g_eager)
    assert len(g_fused) == len(list(head.parameters()))  # every weight, the time MLP's included, gets a gradient


@needs_fused
@pytest.mark.parametrize("per_row_bias", [False, True])
def test_mlp_matches_eager_for_broadcast_and_per_row_bias(per_row_bias, eager):
    net = _fused(EnsembleMLP(2, 14, 1, [32, 32, 32]))
    net.reset_parameters(member_generators([0, 1]))
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 40, 32, generator=gen, requires_grad=True)
    bias = torch.randn(2, 40 if per_row_bias else 1, 32, generator=gen, requires_grad=True)

    def run():
        out = net.forward_from_preactivation(h, bias)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        params = {n: p for n, p in net.named_parameters() if not n.startswith("layers.0.")}  # the first layer is h's
        grads = torch.autograd.grad((out * g).sum(), [h, bias, *params.values()])
        return out.detach(), dict(zip(params, grads[2:])), grads[0], grads[1]

    fused_out = run()
    eager()
    eager_out = run()
    torch.testing.assert_close(fused_out[0], eager_out[0], rtol=1e-5, atol=1e-6)
    _assert_close(fused_out[1], eager_out[1])
    torch.testing.assert_close(fused_out[2], eager_out[2], rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(fused_out[3], eager_out[3], rtol=2e-5, atol=2e-6)
    assert fused_out[3].shape == bias.shape


@needs_fused
def test_policy_values_give_action_gradients_but_no_critic_weight_gradients(eager):
    critic = _fused(DoubleQCritic(11, 3, members=1, critic_hidden=32))
    critic.reset_parameters(member_generators([0]))
    obs = torch.randn(1, 50, 11, generator=torch.Generator().manual_seed(0))
    actions = torch.rand(1, 50, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def run():
        critic.zero_grad(set_to_none=True)
        q = critic.policy_values(obs, actions)
        q.sum().backward()
        grad, actions.grad = actions.grad.clone(), None
        return q.detach(), grad

    q_fused, g_fused = run()
    assert all(p.grad is None for p in critic.parameters())
    torch.testing.assert_close(q_fused, critic(obs, actions).detach())
    eager()
    q_eager, g_eager = run()
    assert all(p.grad is None for p in critic.parameters())
    torch.testing.assert_close(q_fused, q_eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fused, g_eager, rtol=2e-5, atol=2e-6)
    assert g_fused.abs().sum() > 0


@needs_fused
def test_critic_regression_gradients_match_autograd():
    critic = DoubleQCritic(11, 3, members=2, critic_hidden=32)
    critic.reset_parameters(member_generators([0, 1]))
    gen = torch.Generator().manual_seed(0)
    obs, actions, y = torch.randn(2, 40, 11, generator=gen), torch.rand(2, 40, 3, generator=gen), torch.randn(2, 40, generator=gen)
    loss, norm, grads = critic_regression(fused_ops(), critic.q, obs, actions, y)
    q = critic(obs, actions)
    ref_loss = td_error_loss(q, y)
    ref_grads = torch.autograd.grad(ref_loss.sum(), critic.online_parameters())
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-6)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=2e-5, atol=2e-6)
    # per-seed norms over both twins of that seed (members 2m, 2m+1), as clip_grad_norm_ over its critics
    ref_norm = torch.stack([g.reshape(2, -1).pow(2).sum(1) for g in ref_grads]).sum(0).sqrt()
    torch.testing.assert_close(norm, ref_norm, rtol=1e-5, atol=1e-6)
    max_norm = float(ref_norm.min()) / 2  # both seeds get clipped
    _, norm_c, clipped = critic_regression(fused_ops(), critic.q, obs, actions, y, max_norm)
    torch.testing.assert_close(norm_c, ref_norm, rtol=1e-5, atol=1e-6)
    clipped_norm = torch.stack([g.reshape(2, -1).pow(2).sum(1) for g in clipped]).sum(0).sqrt()
    torch.testing.assert_close(clipped_norm, torch.full((2,), max_norm), rtol=1e-4, atol=1e-6)


ENSEMBLE = {"critic": "ensemble-q", "n_critics": 5, "critic_reduce": "lcb"}


#: sampler settings (heads/samplers.py) and the operators the fused backend must run with them: a one-step plan
#: (ddim) keeps the td-target and actor operators; the multistep dpm-solver++ keeps the actor under approx only
SAMPLERS_ON = [
    ({"target_sampler": "ddim", "target_sample_steps": 3}, "fused-cpu (chain, td-target, critic, actor)"),
    ({"q_sampler": "ddim", "q_sample_steps": 4}, "fused-cpu (chain, td-target, critic, actor)"),
    ({"default_sampler": "dpm-solver++", "q_grad": "approx"}, "fused-cpu (chain, critic, actor)"),
    ({"q_sampler": "dpm-solver++", "q_grad": "approx"}, "fused-cpu (chain, td-target, critic, actor)"),
]


@needs_fused
@pytest.mark.parametrize("q_grad,max_q_backup,target_steps,critic", [("exact", False, 0, {}), ("approx", False, 2, {}), ("exact", True, 0, {}),
                                                                     ("exact", True, 0, ENSEMBLE), ("approx", False, 0, ENSEMBLE),
                                                                     *[(None, False, 0, sc) for sc in SAMPLERS_ON]])
def test_agent_training_steps_match_eager(q_grad, max_q_backup, target_steps, critic, eager):
    """A few full Diffusion-QL steps (two seeds) give the same losses and weights on both paths, with
    the twin critic and with an ensemble of five (its target, regression and actor Q term fused too), and
    with other samplers for the critic's next actions and the Q term."""
    import gymnasium as gym
    import numpy as np

    from dqltoolkit.agent import Agent
    from dqltoolkit.bench.throughput import hopper_table
    from dqltoolkit.config import AgentConfig

    expected = None
    if q_grad is None:  # a sampler case: (settings, the backend's description)
        (critic, expected), q_grad = critic, critic[0].get("q_grad", "exact")
        critic = {k: v for k, v in critic.items() if k != "q_grad"}
        target_steps = critic.pop("target_sample_steps", target_steps)

    def run():
        cfg = AgentConfig(T=5, hidden=32, critic_hidden=32, batch_size=64, q_grad=q_grad, ema_start=0, log_every=10**9,
                          max_q_backup=max_q_backup, n_backup_samples=3, target_sample_steps=target_steps, **critic)
        agent = Agent(cfg, gym.spaces.Box(-np.inf, np.inf, (11,), np.float32), gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
                      seeds=[0, 1], device="cpu")
        if expected is not None and os.environ.get("DQLTOOLKIT_FUSED") != "0":
            assert agent.backend.describe() == expected
        agent.set_dataset(hopper_table(2000, 11, 3))
        infos = [agent.train_step() for _ in range(4)]
        return infos, {n: p.detach().clone() for n, p in [*agent.head.named_parameters(), *agent.critic.named_parameters()]}

    infos_fused, params_fused = run()
    eager()
    infos_eager, params_eager = run()
    for a, b in zip(infos_fused, infos_eager):
        for key in ("critic_loss", "bc_loss", "ql_loss"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    _assert_close(params_fused, params_eager, rtol=1e-4, atol=1e-5)


def test_a_failed_build_warns_with_the_compiler_error_and_falls_back(monkeypatch, tmp_path):
    from dqltoolkit import _native

    compiler = tmp_path / "broken-c++"
    compiler.write_text("#!/bin/sh\necho 'fused.cpp:1:1: error: this compiler is broken' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("DQLTOOLKIT_CACHE", str(tmp_path / "cache"))
    _native.fused_ops.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"could not compile fused\.cpp \(fused\.cpp:1:1: error: this compiler is broken\)"):
            assert _native.fused_ops() is None
        assert not list((tmp_path / "cache").glob("dql_fused_*.so"))  # nothing half-built is left to load later
    finally:
        monkeypatch.undo()
        _native.fused_ops.cache_clear()
    if shutil.which("g++") or shutil.which("c++"):
        assert _native.fused_ops() is not None  # the real compiler is used again afterwards
