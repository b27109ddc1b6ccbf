import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import dqltoolkit  # noqa: F401
from dqltoolkit.envs import make_bandit_dataset, mode_of, mode_shares


def test_checkers_pass():
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    gym_check(gym.make("bandit2d-v0").unwrapped)
    sb3_check(gym.make("bandit2d-v0"))


def test_make_without_importing_dqltoolkit():
    code = "import gymnasium as gym, sys; e = gym.make('dqltoolkit.envs:bandit2d-v0'); print(e.observation_space.shape, e.action_space.shape)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2,) (2,)"


def test_one_step_rewards_and_info():
    env = gym.make("bandit2d-v0")
    obs, _ = env.reset(seed=3)
    assert obs.shape == (2,) and not obs.any()
    rewards = []
    for _ in range(400):
        env.reset()
        _, r, term, trunc, info = env.step(np.array([0.85, -0.75], np.float32))
        assert term and not trunc and info["mode"] == "bottom_right"
        rewards.append(r)
    assert np.mean(rewards) == pytest.approx(5.0, abs=0.1) and np.std(rewards) == pytest.approx(0.5, abs=0.08)
    env.reset()
    _, r, _, _, info = env.step(np.array([0.0, 0.0], np.float32))
    assert info["mode"] is None and abs(r) < 3
    # seeded reward noise is reproducible
    e1, e2 = gym.make("bandit2d-v0"), gym.make("bandit2d-v0")
    e1.reset(seed=7), e2.reset(seed=7)
    a = np.array([-0.8, 0.8], np.float32)
    assert e1.step(a)[1] == e2.step(a)[1]


def test_dataset_is_the_papers_mixture():
    d = make_bandit_dataset(10_000, seed=0)
    assert d["actions"].shape == (10_000, 2) and d["observations"].shape == (10_000, 2)
    shares = mode_shares(d["actions"])
    for k in ("top_left", "bottom_left", "top_right", "bottom_right"):
        assert shares[k] == pytest.approx(0.25, abs=0.001)
    assert shares["off_data"] < 0.001
    m = mode_of(d["actions"])
    for i, mean in enumerate([3.0, 0.0, 1.5, 5.0]):
        assert d["rewards"][m == i].mean() == pytest.approx(mean, abs=0.05)
        assert d["actions"][m == i].std(0) == pytest.approx([0.05, 0.05], abs=0.005)
    np.testing.assert_array_equal(d["actions"], make_bandit_dataset(10_000, seed=0)["actions"])


def test_rgb_array_render_draws_modes_and_last_action():
    from dqltoolkit.envs.bandit2d import MODE_CENTRES, RENDER_SIZE, Bandit2DEnv

    def pixel(image, x, y):  # plane coordinates -> the pixel under them (row 0 = top)
        col = int((x + 1) / 2 * RENDER_SIZE)
        row = int((1 - y) / 2 * RENDER_SIZE)
        return tuple(int(v) for v in image[min(row, RENDER_SIZE - 1), min(col, RENDER_SIZE - 1)])

    assert Bandit2DEnv().render() is None  # no render mode: nothing drawn
    env = Bandit2DEnv(render_mode="rgb_array")
    env.reset(seed=0)
    before = env.render()
    assert before.shape == (RENDER_SIZE, RENDER_SIZE, 3) and before.dtype == np.uint8
    best, worst = pixel(before, *MODE_CENTRES[3]), pixel(before, *MODE_CENTRES[1])  # means 5.0 and 0.0
    assert sum(best) < sum(worst) < 3 * 235  # the richer mode is drawn darker, both differ from the background
    assert pixel(before, 0.4, 0.4) == (235, 235, 235)
    env.step(np.array([0.4, 0.4], dtype=np.float32))
    assert pixel(env.render(), 0.4, 0.4) == (220, 30, 30)
    env.reset()
    assert pixel(env.render(), 0.4, 0.4) == (235, 235, 235)  # a new episode has no action yet
    with pytest.raises(ValueError, match="render_mode must be None or one of \\['rgb_array'\\], got 'human'"):
        Bandit2DEnv(render_mode="human")


def test_sb3_make_vec_env_asks_for_a_mode_the_env_has():
    import warnings

    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        venv = make_vec_env("bandit2d-v0", n_envs=2)
    assert not [w for w in caught if "render_mode" in str(w.message)]
    venv.reset()
    frames = venv.get_images()
    assert len(frames) == 2 and frames[0].shape == (128, 128, 3)
