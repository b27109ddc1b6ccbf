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
