"""Online fine-tuning (dqltoolkit/online.py): in Python through `learn` with an SB3 VecEnv and callbacks, and as
`dqltoolkit finetune`, continuing a checkpoint exactly while each seed collects its own experience."""

import csv

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from dqltoolkit.agent import Agent
from dqltoolkit.cli import main
from dqltoolkit.envs.bandit2d import mode_shares
from dqltoolkit.evaluation import evaluate_members
from dqltoolkit.online import MixedBuffer, OnlineBuffer
from dqltoolkit.tasks import get_task
from dqltoolkit.training import sample_policy_actions


def _stochastic(m, task):
    return np.mean([r["mean_return"] for r in evaluate_members(m, task.make_env, episodes=200, deterministic=False)])


def test_online_fine_tuning_improves_a_weak_bandit_policy_from_its_own_experience(tmp_path):
    task = get_task("bandit2d-v0")
    m = Agent.from_task("diffusion-ql", "bandit2d-v0", seeds=[0, 1], log_every=100)
    m.learn(300)  # deliberately weak: most raw samples still off the data
    before, share_before = _stochastic(m, task), mode_shares(sample_policy_actions(m, 500))["bottom_right"]
    assert before < 2.5 and share_before < 0.4, (before, share_before)
    m.config = m.config.replace(online=True, online_offline_ratio=0.0)  # online data only: what it learns, it learned online
    m.set_env(DummyVecEnv([lambda: Monitor(task.make_env())] * 2))  # one env per seed
    start = m.num_timesteps
    m.learn(1000, callback=EvalCallback(DummyVecEnv([lambda: Monitor(task.make_env())]), eval_freq=500, n_eval_episodes=5,
                                          log_path=str(tmp_path)))
    assert m.num_timesteps == start + 1000 and len(m.learner.buffer) == 10_000, "the offline buffer is given back afterwards"
    after, share_after = _stochastic(m, task), mode_shares(sample_policy_actions(m, 500))["bottom_right"]
    assert after > before + 1.5 and after > 4.0 and share_after > share_before + 0.2, (before, after, share_before, share_after)
    assert (tmp_path / "evaluations.npz").is_file()  # SB3's callback ran in the loop


def test_batches_mix_offline_and_online_rows_at_the_ratio():
    import torch

    class Offline:
        def __len__(self):
            return 100

        def sample(self, b, gens):
            return {k: torch.full((2, b, 1) if k in ("obs", "actions", "next_obs") else (2, b), -1.0)
                    for k in ("obs", "actions", "rewards", "next_obs", "terminals")}

    online = OnlineBuffer(2, 4, 1, 1, torch.device("cpu"))
    mixed = MixedBuffer(Offline(), online, 0.25)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    assert (mixed.sample(8, gens)["obs"] == -1).all(), "all offline until the first online transition"
    for i in range(6):  # a ring of 4: the first two are overwritten
        one = torch.full((2, 1), float(i))
        online.add(one, one, one[:, 0], one, one[:, 0] * 0)
    batch = mixed.sample(8, gens)
    assert batch["obs"].shape == (2, 8, 1) and (batch["obs"][:, :2] == -1).all()
    assert set(batch["obs"][:, 2:].flatten().tolist()) <= {2.0, 3.0, 4.0, 5.0} and online.size == 4


def test_finetune_continues_a_checkpoint_online(tmp_path):
    out = tmp_path / "ft"
    res = CliRunner().invoke(main, ["finetune", "zoo:diffusion-ql-bandit2d-v0", "--env", "bandit2d-v0", "--timesteps", "60", "--out", str(out),
                                    "-p", "log_every=20", "-p", "online_offline_ratio=0.25", "--no-progress", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "holds no optimiser state (a policy-only file, as zoo entries are): the optimisers start fresh" in res.output  # said, not hidden
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["resumed_at_step"] == 16_000 and config["config"]["online"] is True
    assert config["config"]["online_offline_ratio"] == 0.25 and config["config"]["steps"] == 16_060
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["time/env_steps"])) for r in rows if r.get("time/env_steps")] == [20, 40, 60]
    assert all(float(r["rollout/ep_rew_mean"]) > 3.0 for r in rows if r.get("rollout/ep_rew_mean"))  # the zoo policy acting well


def test_online_learning_says_what_it_needs():
    task = get_task("bandit2d-v0")
    m = Agent.from_task("diffusion-ql", "bandit2d-v0", seeds=[0, 1], T=3, hidden=16, critic_hidden=16, online=True)
    with pytest.raises(ValueError, match="the env has 1 env\\(s\\) and the agent 2 seed\\(s\\)"):
        m.learn(1)
    n = Agent.from_task("diffusion-ql", "bandit2d-v0", T=3, hidden=16, critic_hidden=16, online=True, reward_tune="normalize")
    n.set_env(Monitor(task.make_env()))
    with pytest.raises(ValueError, match="reward_tune='normalize' depends on the dataset's statistics"):
        n.learn(1)


def test_a_checkpoint_keeps_the_fine_tunes_experience_and_a_resumed_fine_tune_continues_with_it(tmp_path):
    """SIGTERM or SIGKILL during a fine-tune: the newest training checkpoint holds the online buffer, oldest
    transition first, and learning from it goes on with that experience (envs start new episodes)."""
    task = get_task("bandit2d-v0")
    m = Agent.from_task("diffusion-ql", "bandit2d-v0", seeds=[0, 1], T=3, hidden=16, critic_hidden=16, online=True, online_buffer_size=32)
    m.set_env(DummyVecEnv([lambda: Monitor(task.make_env())] * 2))
    m.learn(50)  # 50 transitions per seed into a ring of 32: the oldest 18 overwritten
    buf = m.learner.online_buffer
    assert (buf.size, buf.added) == (32, 50)
    held = buf.chronological()
    # oldest first: the ring's first 18 slots hold transitions 32..49, the rest 18..31
    torch.testing.assert_close(held["obs"], torch.cat([buf.obs[:, 18:], buf.obs[:, :18]], dim=1))
    path = m.save(tmp_path / "ft.zip")
    assert Agent.load(m.save(tmp_path / "policy.zip", include_optimizer=False), device="cpu").learner.online_buffer is None  # (a policy file)

    back = Agent.load(path, device="cpu")
    kept = back.learner.online_buffer
    assert (kept.size, kept.added) == (32, 50)
    for field, t in held.items():
        torch.testing.assert_close(kept.chronological()[field], t)
    back.set_env(DummyVecEnv([lambda: Monitor(task.make_env())] * 2))
    back.learn(10)
    again = back.learner.online_buffer
    assert (again.size, again.added, again.capacity) == (32, 60, 32)
    torch.testing.assert_close(again.chronological()["obs"][:, :22], held["obs"][:, 10:])  # the newest 22 it had, then 10 new
