"""Learning outcomes on the 2-D bandit with the shipped defaults and fixed seeds.

These train the real default runs (about 1.5 minutes and 45 seconds on one core) and assert what the
paper's figure shows: Diffusion-QL puts its samples on the best mode, diffusion BC reproduces all four.
"""

import pytest
import torch

import dqltoolkit
from dqltoolkit.envs.bandit2d import MODE_NAMES, mode_shares
from dqltoolkit.nn import member_generators
from dqltoolkit.training import sample_policy_actions


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite runs two workers on two cores
    yield
    torch.set_num_threads(n)


def test_diffusion_ql_default_picks_the_best_mode(tmp_path):
    res = dqltoolkit.train("diffusion-ql", "bandit2d-v0", tmp_path, seeds=[0], device="cpu", progress=False, verbose=False)
    model = dqltoolkit.load(res.checkpoints[0], device="cpu")
    shares = mode_shares(sample_policy_actions(model, 1000, seed=123))
    assert shares["bottom_right"] >= 0.9, shares
    assert shares["off_data"] <= 0.05, shares
    # the respaced sampler (10 of the 50 steps) keeps the result
    fast = mode_shares(model.head.sample(torch.zeros(1, 1000, 2), member_generators([123]), steps=10)[0].detach().numpy())
    assert fast["bottom_right"] >= 0.9 and fast["off_data"] <= 0.05, fast
    ev = res.results["evaluation"][0]
    assert ev["episodes"] == 1000 and ev["mean_return"] >= 4.5, ev
    assert (tmp_path / "bandit.png").stat().st_size > 10_000


def test_diffusion_bc_default_covers_all_four_modes(tmp_path):
    res = dqltoolkit.train("diffusion-bc", "bandit2d-v0", tmp_path, seeds=[0], device="cpu", progress=False, verbose=False)
    model = dqltoolkit.load(res.checkpoints[0], device="cpu")
    shares = mode_shares(sample_policy_actions(model, 1000, seed=123))
    for name in MODE_NAMES:
        assert 0.15 <= shares[name] <= 0.35, shares
    assert shares["off_data"] <= 0.05, shares
    # no critic: stochastic acting samples the head directly, so the env reward is the data's average (about 2.4)
    from dqltoolkit.evaluation import evaluate
    from dqltoolkit.tasks import get_task

    stochastic = evaluate(model, get_task("bandit2d-v0").make_env, episodes=1000, seed=100, deterministic=False)
    assert 2.0 <= stochastic["mean_return"] <= 2.9, stochastic
