"""CUDA-graphed training steps train the same model as eager steps (run where a GPU is present).

CI has no GPU, so these skip there; they run on the lent GPU machines (see docs/performance.md).
"""

import pytest
import torch

from dqltoolkit import Agent

from .conftest import random_table, tiny_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pair(spaces, seeds=(0,), **kw):
    """Two agents with identical weights and generators, one replaying CUDA graphs, one eager."""
    agents = []
    for graphs in (True, False):
        a = Agent(tiny_config(cuda_graphs=graphs, **kw), *spaces, seeds=list(seeds), device="cuda")
        a.set_dataset(random_table(n=500))
        agents.append(a)
    return agents


def _assert_same_state(a, b, rtol=1e-5, atol=1e-6):
    for prefix, (ma, mb) in {"head": (a.head, b.head), "ema": (a.ema_head, b.ema_head), "critic": (a.critic, b.critic)}.items():
        for (name, pa), (_, pb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol, msg=lambda m: f"{prefix}.{name}: {m}")


@cuda
@pytest.mark.parametrize(
    "kw",
    [
        dict(ema_start=4, ema_every=2),  # EMA copy, EMA average and no-EMA variants
        dict(ema_start=4, ema_every=2, policy_delay=2, lr_decay=True, steps=16),  # critic-only steps, lr schedule in the graph
        dict(q_grad="approx", max_q_backup=True, n_backup_samples=3),
        dict(eta_warmup=6, ema_start=0),  # eta changes every step: a new variant each step until the cap, then eager
        dict(matmul_precision="high"),  # TF32 chosen at capture, and the same on the eager agent
        dict(critic="ensemble-q", n_critics=5, critic_reduce="lcb"),  # the ensemble's network pick and reduction inside the graph
    ],
)
def test_graphed_steps_equal_eager_steps(spaces, kw):
    graphed, eager = _pair(spaces, seeds=(0, 3), **kw)
    for step in range(16):
        info_g = {k: v.clone() for k, v in graphed.train_step().items()}
        info_e = eager.train_step()
        for k in info_e:
            torch.testing.assert_close(info_g[k], info_e[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step} {k}: {m}")
    _assert_same_state(graphed, eager)
    stats = graphed.backend.step_graphs.stats()
    assert stats["disabled"] is None, stats
    assert stats["replays"] + stats["eager_steps"] == 16 and stats["variants"] >= 1
    if "eta_warmup" not in kw:
        assert stats["eager_steps"] == graphed.backend.step_graphs.WARMUP_STEPS
    if kw.get("lr_decay"):
        lr = graphed.actor_opt.param_groups[0]["lr"]
        assert isinstance(lr, torch.Tensor) and float(lr) == pytest.approx(eager.actor_opt.param_groups[0]["lr"], rel=1e-6)


@cuda
def test_graphed_diffusion_ql_uses_three_variants_and_no_eager_steps_after_warmup(spaces):
    agent = Agent(tiny_config(ema_start=10, ema_every=5), *spaces, device="cuda")
    agent.set_dataset(random_table(n=500))
    agent.learn(40)
    stats = agent.backend.step_graphs.stats()
    # (actor, EMA copy), (actor, no EMA), (actor, EMA average)
    assert stats == {"variants": 3, "replays": 40 - 3, "eager_steps": 3, "disabled": None}
    assert all(torch.isfinite(v).all() for v in agent.pop_metrics().values() for v in [torch.as_tensor(v)])


@cuda
def test_graphed_run_resumes_from_a_checkpoint_exactly(spaces, tmp_path):
    agent = Agent(tiny_config(ema_start=4, ema_every=2, lr_decay=True, steps=30), *spaces, device="cuda")
    agent.set_dataset(random_table(n=500))
    agent.learn(10)
    resumed = Agent.load(agent.save(tmp_path / "ckpt"), device="cuda")
    resumed.set_dataset(random_table(n=500), refit_obs_stats=False)
    assert float(resumed.actor_opt.param_groups[0]["lr"]) == pytest.approx(float(agent.actor_opt.param_groups[0]["lr"]), rel=1e-6)
    agent.learn(8)
    resumed.learn(8)
    _assert_same_state(agent, resumed)


@cuda
def test_critic_update_on_its_own_stream_trains_the_same_model(spaces):
    overlapped, sequential = (Agent(tiny_config(cuda_graphs=False, ema_start=2, ema_every=2), *spaces, seeds=[0, 1], device="cuda") for _ in "ab")
    sequential.backend.stream = None  # the critic's update on the actor's stream
    for agent in (overlapped, sequential):
        agent.set_dataset(random_table(n=500))
        agent.learn(12)
    _assert_same_state(overlapped, sequential)
    m_o, m_s = overlapped.pop_metrics(), sequential.pop_metrics()
    for k in m_s:
        torch.testing.assert_close(torch.as_tensor(m_o[k]), torch.as_tensor(m_s[k]), msg=lambda m: f"{k}: {m}")


@cuda
def test_a_subclassed_head_runs_its_own_sample_on_the_gpu(spaces):
    """The chain kernel is installed only for the exact class that declares it: a subclass's override runs."""
    from dqltoolkit.heads.diffusion import DiffusionHead
    from dqltoolkit.registry import HEADS

    calls = []

    class Shifted(DiffusionHead):
        def sample(self, obs, generators, **kw):
            calls.append(obs.shape)
            return (super().sample(obs, generators, **kw) * 0.5).clamp(-1, 1)

    HEADS.register("shifted-gpu-test", Shifted, overwrite=True)
    agent = Agent(tiny_config(head="shifted-gpu-test"), *spaces, device="cuda")
    assert agent.head.chain_kernel is None and "chain" not in agent.backend.describe()
    agent.set_dataset(random_table(n=500))
    agent.learn(6)
    agent.predict(torch.zeros(3).numpy())
    assert len(calls) >= 6 + 2


@cuda
def test_foreach_pieces_cover_every_element():
    from dqltoolkit.nn import foreach_pieces

    tensors = [torch.randn(3, 256, 256, device="cuda"), torch.randn(7, device="cuda")]
    before = [t.clone() for t in tensors]
    pieces = foreach_pieces(tensors, size=1000)
    assert sum(p.numel() for p in pieces) == sum(t.numel() for t in tensors) and max(p.numel() for p in pieces) == 1000
    torch._foreach_mul_(pieces, 2.0)
    for t, b in zip(tensors, before):
        torch.testing.assert_close(t, 2 * b)


@cuda
def test_a_new_dataset_is_sampled_by_fresh_graphs(spaces):
    agent = Agent(tiny_config(), *spaces, device="cuda")
    agent.set_dataset(random_table(n=500, seed=0))
    agent.learn(8)
    assert agent.backend.step_graphs.stats()["variants"] >= 1
    big_rewards = random_table(n=300, seed=1)
    big_rewards["rewards"] = big_rewards["rewards"] * 0 + 1000.0
    agent.set_dataset(big_rewards)  # the old dataset's tensors are freed: graphs must not read them
    assert agent.backend.step_graphs.stats()["variants"] == 0
    for _ in range(4):
        agent.train_step()
    assert agent.backend.step_graphs.stats()["variants"] >= 1
    batch_rewards = agent.buffer.sample(32, agent.train_generators)["rewards"]
    assert torch.all(batch_rewards == 1000.0)
    # the critic now regresses onto rewards of 1000: its loss is far above what the first dataset gave
    assert agent.pop_metrics()["critic_loss"].mean() > 1e4


@cuda
@pytest.mark.parametrize("deterministic", [False, True])
def test_graphed_acting_picks_the_actions_eager_acting_picks(spaces, deterministic):
    import numpy as np

    graphed, eager = (Agent(tiny_config(cuda_graphs=g, normalize_obs=True), *spaces, seeds=[0, 1], device="cuda") for g in (True, False))
    rng = np.random.default_rng(0)
    for data_seed in (0, 1):  # a second dataset brings new observation statistics: captured acting must follow
        table = random_table(n=500, seed=data_seed)
        table["observations"] = table["observations"] * (1 + 4 * data_seed) + 3 * data_seed
        for agent in (graphed, eager):
            agent.set_dataset(table)
            agent.learn(5)
        for call in range(4):
            for n_envs in (1, 6):
                obs = rng.standard_normal((n_envs, 3)).astype(np.float32) * 2
                a_g, _ = graphed.predict(obs, deterministic=deterministic)
                a_e, _ = eager.predict(obs, deterministic=deterministic)
                np.testing.assert_allclose(a_g, a_e, rtol=1e-5, atol=1e-6, err_msg=f"dataset {data_seed}, call {call}, {n_envs} envs")
    assert len(graphed.backend.act_graphs.graphs) == 2 and graphed.backend.act_graphs.disabled is None
    assert graphed.backend.describe() == "cuda (chain, streams, graphs)"
