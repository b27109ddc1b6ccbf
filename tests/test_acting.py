"""Acting as SB3 users call it: evaluate_policy with its defaults (deterministic) on the shipped bandit model."""

import gymnasium as gym
import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import dqltoolkit


def test_sb3_default_evaluation_of_the_bandit_model_is_as_good_as_stochastic_acting():
    model = dqltoolkit.load("zoo:diffusion-ql-bandit2d-v0", device="cpu")
    env = Monitor(gym.make("bandit2d-v0"))
    det, _ = evaluate_policy(model, env, n_eval_episodes=200)  # SB3's default: deterministic=True
    sto, _ = evaluate_policy(model, env, n_eval_episodes=200, deterministic=False)
    assert det >= 4.8 and det >= sto - 0.1, (det, sto)
    obs = np.zeros((5, 2), np.float32)
    first, _ = model.predict(obs, deterministic=True)
    again, _ = model.predict(obs[:1], deterministic=True)
    np.testing.assert_array_equal(first, np.repeat(again, 5, axis=0))  # reproducible: same observation, same action


def test_the_selection_rules_by_hand():
    """acting.selection_scores, the one definition of the choice among candidates (acting and the exported graph)."""
    import pytest
    import torch

    from dqltoolkit.acting import selection_scores

    q = torch.tensor([[2.0, 2.2, 2.0, 2.0]])
    cand = torch.tensor([[[0.0], [1.0], [0.1], [0.05]]])
    assert selection_scores(q, cand, "greedy").argmax(-1).item() == 1
    # medoid: the softmax(Q)-weighted distance to the others; the best-valued candidate (1.0) is an outlier, 0.1 sits
    # in the middle of the mass
    w = torch.softmax(q, -1)[0]
    spread = [sum(float(w[j]) * abs(float(cand[0, i, 0] - cand[0, j, 0])) for j in range(4)) for i in range(4)]
    torch.testing.assert_close(selection_scores(q, cand, "medoid")[0], -torch.tensor(spread))
    assert selection_scores(q, cand, "medoid").argmax(-1).item() == int(np.argmin(spread)) == 2
    # draw: Gumbel-max with uniform numbers picks each candidate with probability softmax(Q)
    u = torch.rand(200_000, 4, generator=torch.Generator().manual_seed(0))
    picks = selection_scores(q.expand(200_000, 4), cand.expand(200_000, 4, 1), "draw", u).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / 200_000
    torch.testing.assert_close(freq, w, atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="selection rule 'draw': expected greedy, medoid, or draw with uniform numbers"):
        selection_scores(q, cand, "draw")
