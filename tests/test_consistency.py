"""The consistency-model head: its parametrisation by hand, its sampler, training, checkpoints, export and the bandit."""

import math

import numpy as np
import pytest
import torch

from dqltoolkit import Agent
from dqltoolkit.config import load_recipe
from dqltoolkit.heads.consistency import ConsistencyHead, karras_sigmas
from dqltoolkit.nn import member_generators
from dqltoolkit.registry import HEADS
from dqltoolkit.training import sample_policy_actions

from .conftest import random_table, tiny_config

SMALL = dict(hidden=16, time_dim=8, N=10)
STEPS = 600


def head(**kw) -> ConsistencyHead:
    h = ConsistencyHead(3, 2, members=2, **{**SMALL, **kw})
    h.reset_parameters(member_generators([0, 1]))
    return h


def test_registered_with_shapes_for_every_method():
    assert HEADS.get("consistency") is ConsistencyHead and ConsistencyHead.differentiable_samples
    h, g = head(), member_generators([0, 1])
    obs, actions = torch.randn(2, 5, 3), torch.rand(2, 5, 2) * 2 - 1
    assert h.behaviour_loss(obs, actions, g).shape == (2,)
    assert h.behaviour_loss_per_sample(obs, actions, g).shape == (2, 5)
    loss, estimate = h.behaviour_loss_and_estimate(obs, actions, g)
    assert loss.shape == (2,) and estimate.shape == (2, 5, 2)
    for steps, k in ((None, 2), (1, 1), (2, 2), (3, 3)):  # None: the head's cm_steps (2)
        assert h.draw_noise(4, g, torch.device("cpu"), steps).shape == (2, k, 4, 2)
        a = h.sample(obs, g, steps=steps)
        assert a.shape == (2, 5, 2) and a.abs().max() <= 1.0


def test_f_is_the_identity_at_sigma_min_and_skip_out_by_hand():
    h = head()
    obs = torch.randn(2, 4, 3)
    x = torch.tensor([[0.3, -0.7], [0.99, 0.0], [-0.5, 0.25], [1.7, -2.0]]).expand(2, 4, 2)
    at_min = h.consistency(x, torch.full((2, 1), h.sigma_min), obs)
    # c_skip(sigma_min) = sd^2 / (0 + sd^2) = 1 and c_out(sigma_min) = 0: x itself, clipped to the bound
    assert torch.equal(at_min, x.clamp(-1, 1))
    # with F = 0 (last layer zeroed), f(x, sigma) = c_skip(sigma) x; sigma = sigma_min + sigma_data gives
    # c_skip = 0.25 / (0.25 + 0.25) = 0.5
    with torch.no_grad():
        h.net.layers[-1].weight.zero_()
        h.net.layers[-1].bias.zero_()
    half = h.consistency(x, torch.full((2, 1), h.sigma_min + 0.5), obs)
    assert torch.allclose(half, (0.5 * x).clamp(-1, 1))
    # and c_out by hand: with F = 1 everywhere (bias 1), at sigma = 1: c_skip = 0.25 / (0.998^2 + 0.25),
    # c_out = 0.5 * 0.998 / sqrt(1.25)
    with torch.no_grad():
        h.net.layers[-1].bias.fill_(1.0)
    y = h.consistency(torch.full((2, 1, 2), 0.2), torch.full((2, 1), 1.0), obs[:, :1])
    expect = 0.25 / (0.998**2 + 0.25) * 0.2 + 0.5 * 0.998 / math.sqrt(1.25)
    assert torch.allclose(y, torch.full((2, 1, 2), expect))


def test_karras_levels_and_the_two_step_sampler_by_hand():
    s = karras_sigmas(0.002, 80.0, 3, 7.0)
    mid = ((0.002 ** (1 / 7) + 80 ** (1 / 7)) / 2) ** 7
    assert s[0] == pytest.approx(0.002) and s[2] == pytest.approx(80.0) and s[1] == pytest.approx(mid)
    h, g = head(), member_generators([0, 1])
    obs = torch.randn(2, 6, 3)
    noise = h.draw_noise(6, g, torch.device("cpu"), 2)
    # one step: f(sigma_max z0, sigma_max); two steps: then f(a + sqrt(sigma_mid^2 - sigma_min^2) z1, sigma_mid)
    one = h.consistency(noise[:, 0] * h.sigma_max, torch.full((2, 1), h.sigma_max), obs)
    two = h.consistency(one + math.sqrt(h.sigma_mid**2 - h.sigma_min**2) * noise[:, 1], torch.full((2, 1), h.sigma_mid), obs)
    assert torch.allclose(h.sample(obs, g, noise=noise[:, :1], steps=1), one)
    assert torch.allclose(h.sample(obs, g, noise=noise, steps=2), two)
    assert h.step_sigmas(2) == [80.0, pytest.approx(0.821)]
    # the samples keep the graph to the parameters (the ql objective maximises Q through them)
    for steps in (1, 2):
        h.zero_grad()
        h.sample(obs, g, steps=steps).sum().backward()
        assert h.net.layers[0].weight.grad.abs().sum() > 0


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"sigma_min < sigma_mid < sigma_max"):
        ConsistencyHead(3, 2, sigma_mid=100.0)
    with pytest.raises(ValueError, match=r"N=1 must lie in \[2, 10000\]"):
        ConsistencyHead(3, 2, N=1)
    with pytest.raises(ValueError, match=r"cm_loss='l1' is not one of"):
        ConsistencyHead(3, 2, cm_loss="l1")


def test_consistency_training_lowers_its_loss():
    """Adam on the loss alone, actions a function of the state: the same draws' loss falls by more than half."""
    h = head()
    obs = torch.randn(1, 256, 3, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1)
    actions = torch.tanh(1.5 * obs[..., :2])

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(h.behaviour_loss(obs, actions, member_generators([5, 6])).sum())

    before = fixed_loss()
    opt = torch.optim.Adam(h.parameters(), lr=1e-3)
    g = member_generators([0, 1])
    for _ in range(STEPS):
        opt.zero_grad()
        h.behaviour_loss(obs, actions, g).sum().backward()
        opt.step()
    assert fixed_loss() < 0.5 * before, (before, fixed_loss())


def test_the_recipes_resolve_and_the_learner_runs_the_head_eagerly(spaces):
    cfg, _ = load_recipe("consistency-ql", "bandit2d-v0")
    assert (cfg.head, cfg.objective, cfg.sigma_max, cfg.sigma_mid, cfg.eta) == ("consistency", "ql", 5.0, 0.4, 0.3)
    cfg, _ = load_recipe("consistency-ql", "hopper-medium-v2")
    assert (cfg.cm_steps, cfg.sigma_mid, cfg.eta, cfg.grad_norm) == (2, 2.0, 0.1, 9.0)
    assert load_recipe("consistency-bc", "bandit2d-v0")[0].objective == "bc"
    agent = Agent(tiny_config(head="consistency", objective="ql"), *spaces, seeds=[0], device="cpu")
    assert "chain" not in agent.backend.describe() and "actor" not in agent.backend.describe()


def test_save_and_load_round_trip(spaces, tmp_path):
    agent = Agent(tiny_config(head="consistency", objective="ql", N=12, cm_steps=2), *spaces, seeds=[0], device="cpu")
    agent.set_dataset(random_table())
    agent.learn(20)
    path = agent.save(tmp_path / "model.zip")
    loaded = Agent.load(path, device="cpu")
    assert (loaded.config.head, loaded.config.N, loaded.head.N, loaded.head.sigmas) == ("consistency", 12, 12, agent.head.sigmas)
    for name, t in agent.learner.head.state_dict().items():
        assert torch.equal(t, loaded.learner.head.state_dict()[name]), name
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    assert np.array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.set_dataset(random_table())
    loaded.learn(2)  # and it trains on


def _best_mode_share(recipe: str, steps: int, seed: int = 0, **overrides) -> dict:
    from dqltoolkit.ablation import Modes
    from dqltoolkit.tasks import get_task

    agent = Agent.from_task(recipe, "bandit2d-v0", seeds=(seed,), device="cpu", **overrides)
    agent.learn(steps)
    env = get_task("bandit2d-v0").make_env()
    observation, _ = env.reset(seed=0)
    modes = Modes.of(env)
    shares = modes.shares(sample_policy_actions(agent, 1000, 0, observation=observation))
    return {"best": shares[modes.best], **shares}


def test_bandit_ql_moves_the_samples_towards_the_best_mode():
    """The default suite's short check (20 s): after 2500 steps (the last 500 with the Q term) most samples
    are on the best mode, against a quarter for behaviour cloning."""
    shares = _best_mode_share("consistency-ql", 2500)
    assert shares["best"] >= 0.5, shares


@pytest.mark.slow
def test_bandit_acceptance_consistency_ql_puts_90_percent_on_the_best_mode():
    """The recipe as shipped (5000 steps, about a minute on one core), seed 0: >= 90% of 1,000 samples."""
    shares = _best_mode_share("consistency-ql", 5000)
    assert shares["best"] >= 0.9, shares


@pytest.mark.parametrize("fmt,deterministic", [("onnx", False), ("onnx", True), ("torchscript", False)])
def test_export_acts_like_predict(tmp_path, fmt, deterministic):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    from dqltoolkit.export import ActingGraph, compare_actions, export_policy, load_runner, predict_draws

    agent = Agent.from_task("consistency-ql", "bandit2d-v0", device="cpu", hidden=16, critic_hidden=16, n_candidates=4, batch_size=32)
    agent.learn(3)
    path = export_policy(agent, tmp_path / f"policy.{'onnx' if fmt == 'onnx' else 'pt'}", fmt, deterministic=deterministic)
    graph = ActingGraph(agent, deterministic=deterministic)
    obs = np.random.default_rng(0).uniform(-1, 1, (7, agent.obs_dim)).astype(np.float32)
    inputs = {"obs": obs, **({} if deterministic else {k: v.numpy() for k, v in predict_draws(agent, graph, 7).items()})}
    if not deterministic:  # the noise input is the head's two steps for each of the 7 x 4 candidate rows
        assert inputs["noise"].shape == (2, 28, 2)
    res = compare_actions(graph, inputs, agent.predict(obs, deterministic=deterministic)[0], load_runner(path)(inputs))
    assert res["mismatches"] == [] and res["max_diff"] < 1e-5, res
