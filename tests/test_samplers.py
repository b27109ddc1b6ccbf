"""Samplers as an argument of the diffusion head (dqltoolkit/heads/samplers.py): DDPM, DDIM, DPM-Solver++(2M),
each checked against a hand computation; the chain kernels run the one-step plans; a new sampler is a new
registration; the configuration keys reach acting, the critic's targets and the Q term."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dqltoolkit
from dqltoolkit._native import fused_ops
from dqltoolkit.cli import main
from dqltoolkit.config import AgentConfig, ConfigError
from dqltoolkit.envs.bandit2d import BEST_MODE, MODE_NAMES, mode_shares
from dqltoolkit.heads.diffusion import DiffusionHead
from dqltoolkit.heads.samplers import DDIM, SAMPLERS, Sampler, kernel_ready
from dqltoolkit.learner import Learner
from dqltoolkit.nn import member_generators
from dqltoolkit.training import sample_policy_actions

needs_fused = pytest.mark.skipif(fused_ops() is None, reason="fused operators could not be built here")
BANDIT = "bandit2d-v0"


def make_head(T: int = 5, max_action: float = 1.0, seed: int = 0) -> DiffusionHead:
    h = DiffusionHead(3, 2, members=1, max_action=max_action, T=T, hidden=16, time_dim=8)
    h.reset_parameters(member_generators([seed]))
    return h


def eps_np(head: DiffusionHead, x: np.ndarray, i: int, obs: torch.Tensor) -> np.ndarray:
    """The denoiser at network time ``i`` through the head's public per-sample interface, as float64."""
    t = torch.full((1, x.shape[0]), i, dtype=torch.long)
    with torch.no_grad():
        return head.predict_noise(torch.as_tensor(x, dtype=torch.float32)[None], t, obs)[0].double().numpy()


# --- each sampler against a hand computation ---------------------------------------------------------------------

def test_ddim_with_all_steps_and_no_clipping_equals_a_numpy_ddim():
    head = make_head(T=6, max_action=1e6)  # bounds far away: x0 is never clipped
    obs = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 6, 5, 2, generator=torch.Generator().manual_seed(2))
    abar = np.cumprod(1.0 - head.betas)
    x = noise[0, 0].double().numpy()
    for i in reversed(range(6)):  # Song et al.: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps
        e = eps_np(head, x, i, obs)
        x0 = (x - np.sqrt(1 - abar[i]) * e) / np.sqrt(abar[i])
        prev = abar[i - 1] if i > 0 else 1.0
        x = np.sqrt(prev) * x0 + np.sqrt(1 - prev) * e
    with torch.no_grad():
        out = head.sample(obs, None, noise=noise, sampler="ddim")[0].double().numpy()
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4)
    # deterministic: the noise after x_T is not used
    noisier = noise.clone()
    noisier[:, 1:] = 7.0
    with torch.no_grad():
        torch.testing.assert_close(head.sample(obs, None, noise=noisier, sampler="ddim"), head.sample(obs, None, noise=noise, sampler="ddim"))


def test_dpm_solver_pp_2m_coefficients_and_samples_match_a_hand_computation_on_three_steps():
    head = make_head(T=50, max_action=1e6)
    plan = head.chain(3, "dpm-solver++")
    assert plan["t"] == [0, 24, 49] and not kernel_ready(plan)
    a = head.alphas_cumprod[[0, 24, 49]]
    al, si = np.sqrt(a), np.sqrt(1 - a)
    lam = np.log(al / si)
    h1, h2 = lam[1] - lam[2], lam[0] - lam[1]  # 49 -> 24, then 24 -> 0
    r = h1 / h2
    # first step: first order (DDIM); second: 2M with r = h1 / h2; last: to abar = 1, x = x0
    np.testing.assert_allclose(plan["coef2"], [0.0, si[0] / si[1], si[1] / si[2]], rtol=1e-12)
    np.testing.assert_allclose(plan["coef1"], [1.0, al[0] * (1 - np.exp(-h2)) * (1 + 1 / (2 * r)), al[1] * (1 - np.exp(-h1))], rtol=1e-12)
    np.testing.assert_allclose(plan["coef0"], [0.0, -al[0] * (1 - np.exp(-h2)) / (2 * r), 0.0], rtol=1e-12, atol=1e-15)
    assert plan["std"] == [0.0, 0.0, 0.0]
    # the loop, written as the paper's Algorithm 2 (x_t = sigma_t / sigma_s x_s - alpha_t (e^-h - 1) D)
    obs = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(1, 3, 4, 2, generator=torch.Generator().manual_seed(4))
    x = noise[0, 0].double().numpy()

    def x0_at(x, pos):
        i = [0, 24, 49][pos]
        return (x - si[pos] * eps_np(head, x, i, obs)) / al[pos]

    d2 = x0_at(x, 2)
    x = si[1] / si[2] * x - al[1] * (np.exp(-h1) - 1) * d2
    d1 = x0_at(x, 1)
    D = (1 + 1 / (2 * r)) * d1 - 1 / (2 * r) * d2
    x = si[0] / si[1] * x - al[0] * (np.exp(-h2) - 1) * D
    x = x0_at(x, 0)
    with torch.no_grad():
        out = head.sample(obs, None, noise=noise, steps=3, sampler="dpm-solver++")[0].double().numpy()
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4)


def _ddpm_as_before(head: DiffusionHead, obs, noise):
    """The head's reverse loop as it was written before samplers existed (the posterior step, T steps)."""
    abar = head.alphas_cumprod
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    betas = 1.0 - abar / abar_prev
    recip, recipm1 = np.sqrt(1.0 / abar).tolist(), np.sqrt(1.0 / abar - 1.0).tolist()
    coef1 = (betas * np.sqrt(abar_prev) / (1.0 - abar)).tolist()
    coef2 = ((1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar)).tolist()
    std = np.exp(0.5 * np.log(np.clip(betas * (1.0 - abar_prev) / (1.0 - abar), 1e-20, None))).tolist()
    tp, sp = head._time_proj(), head._state_proj(obs)
    x = noise[:, 0]
    for k, j in enumerate(reversed(range(head.T))):
        eps = head._eps(x, sp, tp[:, j : j + 1].contiguous())
        x0 = (recip[j] * x - recipm1[j] * eps).clamp(-1, 1)
        x = coef1[j] * x0 + coef2[j] * x
        if j > 0:
            x = x + std[j] * noise[:, k + 1]
    return x.clamp(-1, 1)


def test_ddpm_with_all_steps_is_bit_equal_to_the_loop_before_samplers():
    head = make_head(T=8)
    obs = torch.randn(1, 9, 3, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(1, 8, 9, 2, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        before = _ddpm_as_before(head, obs, noise)
        assert torch.equal(head.sample(obs, None, noise=noise), before)
        assert torch.equal(head.sample(obs, None, noise=noise, sampler="ddpm"), before)
    # and drawing its own noise: the same draws as before
    g1, g2 = member_generators([7]), member_generators([7])
    with torch.no_grad():
        assert torch.equal(head.sample(obs, g1), _ddpm_as_before(head, obs, head.draw_noise(9, g2, torch.device("cpu"))))


@needs_fused
@pytest.mark.parametrize("steps", [0, 4])
def test_fused_chain_runs_ddim_as_the_eager_loop(steps):
    head = make_head(T=10)
    obs = torch.randn(1, 32, 3, generator=torch.Generator().manual_seed(8))
    noise = 1.5 * torch.randn(1, len(head.chain(steps)["t"]), 32, 2, generator=torch.Generator().manual_seed(9))
    assert kernel_ready(head.chain(steps, "ddim"))
    eager = head.sample(obs, None, noise=noise, steps=steps, sampler="ddim")
    g_eager = torch.autograd.grad(eager.pow(2).sum(), list(head.parameters()))
    from dqltoolkit.backends.fused_cpu import fused_chain

    calls = []
    kernel = fused_chain(fused_ops())
    head.chain_kernel = lambda *a: calls.append(1) or kernel(*a)
    out = head.sample(obs, None, noise=noise, steps=steps, sampler="ddim")
    g_fused = torch.autograd.grad(out.pow(2).sum(), list(head.parameters()))
    assert calls == [1]
    torch.testing.assert_close(out, eager, rtol=2e-5, atol=2e-6)
    for a, b in zip(g_fused, g_eager):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)
    # a multistep plan runs its own loop: with a graph, eagerly (the kernel is never asked) ...
    head.chain_kernel = None
    dpm_eager = head.sample(obs, None, noise=noise, steps=steps, sampler="dpm-solver++")
    head.chain_kernel = lambda *a: calls.append(1) or kernel(*a)
    dpm = head.sample(obs, None, noise=noise, steps=steps, sampler="dpm-solver++")
    assert calls == [1] and dpm.requires_grad
    torch.testing.assert_close(dpm, dpm_eager)
    # ... without one, the forward operator runs the multistep plan: the same numbers
    with torch.no_grad():
        fast = head.sample(obs, None, noise=noise, steps=steps, sampler="dpm-solver++")
    assert calls == [1, 1]
    torch.testing.assert_close(fast, dpm_eager.detach(), rtol=2e-5, atol=2e-6)
    with pytest.raises(RuntimeError, match="no backward"):  # the operator is never asked for a graph
        kernel(noise, head._state_proj(obs), head._time_proj(), head.net.layers[0].weight[:, :2],
               [m.weight for m in head.net.layers[1:]], [m.bias for m in head.net.layers[1:]], head.chain(steps, "dpm-solver++"), 1.0)


def test_the_gpu_chain_node_runs_multistep_plans_forward_as_the_eager_loop():
    """heads/reverse_chain.py (the CUDA backend's kernel, torch ops: checked here on the CPU)."""
    from dqltoolkit.heads.reverse_chain import reverse_chain

    head = make_head(T=20)
    obs = torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(12))
    noise = 1.5 * torch.randn(1, 6, 16, 2, generator=torch.Generator().manual_seed(13))
    eager = head.sample(obs, None, noise=noise, steps=6, sampler="dpm-solver++")
    head.chain_kernel = reverse_chain
    with torch.no_grad():
        torch.testing.assert_close(head.sample(obs, None, noise=noise, steps=6, sampler="dpm-solver++"), eager.detach(), rtol=1e-5, atol=1e-6)
    again = head.sample(obs, None, noise=noise, steps=6, sampler="dpm-solver++")  # with a graph: the eager loop
    assert again.requires_grad
    with pytest.raises(RuntimeError, match="no backward"):
        reverse_chain(noise, head._state_proj(obs), head._time_proj(), head.net.layers[0].weight[:, :2],
                      [m.weight for m in head.net.layers[1:]], [m.bias for m in head.net.layers[1:]], head.chain(6, "dpm-solver++"), 1.0)


def test_gradients_flow_through_dpm_solver_pp_samples_and_grad_steps_still_cuts_them():
    head = make_head(T=20)
    head.chain_kernel = lambda *a: (_ for _ in ()).throw(AssertionError("a multistep plan must not use the chain kernel"))
    obs = torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(10))
    noise = torch.randn(1, 5, 16, 2, generator=torch.Generator().manual_seed(11))
    params = list(head.parameters())
    full = torch.autograd.grad(head.sample(obs, None, noise=noise, steps=5, sampler="dpm-solver++").sum(), params)
    last = torch.autograd.grad(head.sample(obs, None, noise=noise, steps=5, sampler="dpm-solver++", grad_steps=1).sum(), params)
    assert all(torch.isfinite(g).all() for g in full) and sum(float(g.abs().sum()) for g in full) > 0
    assert sum(float(g.abs().sum()) for g in last) > 0
    assert any(not torch.allclose(a, b) for a, b in zip(full, last))  # fewer steps in the graph: other gradients


# --- acting, targets, the Q term: the configuration keys ------------------------------------------------------

def _learner(**values) -> Learner:
    cfg = AgentConfig(T=10, hidden=16, critic_hidden=16, n_candidates=3, **values)
    return Learner(cfg, 3, 2, [0], torch.device("cpu"))


def test_configured_samplers_reach_acting_the_targets_and_the_q_term(monkeypatch):
    seen = []
    original = DiffusionHead.sample

    def spy(self, obs, generators, noise=None, steps=None, **kw):
        seen.append((steps, kw.get("sampler")))
        return original(self, obs, generators, noise=noise, steps=steps, **kw)

    monkeypatch.setattr(DiffusionHead, "sample", spy)
    L = _learner(sampler="dpm-solver++", sample_steps=4, target_sampler="ddim", target_sample_steps=3,
                 q_sampler="ddim", q_sample_steps=5)
    batch = {"obs": torch.randn(1, 8, 3), "actions": torch.rand(1, 8, 2) * 2 - 1, "rewards": torch.randn(1, 8),
             "next_obs": torch.randn(1, 8, 3), "not_done": torch.ones(1, 8)}
    L.next_actions(batch["next_obs"])
    assert seen[-1] == (3, "ddim")
    L.objective.actor_loss(L.head, L.critic, batch["obs"], batch["actions"], L.train_generators)
    assert seen[-1] == (5, "ddim")
    from dqltoolkit.acting import ActingPolicy

    ActingPolicy(L).act(torch.randn(1, 2, 3))
    assert seen[-1] == (4, "dpm-solver++")


def test_unset_samplers_are_not_passed_so_heads_with_the_old_signature_work(monkeypatch):
    seen = []
    original = DiffusionHead.sample

    def old_signature(self, obs, generators, noise=None, steps=None):  # as a plugin head written before samplers
        seen.append(steps)
        return original(self, obs, generators, noise=noise, steps=steps)

    monkeypatch.setattr(DiffusionHead, "sample", old_signature)
    L = _learner()
    L.next_actions(torch.randn(1, 4, 3))
    from dqltoolkit.acting import ActingPolicy

    ActingPolicy(L).act(torch.randn(1, 2, 3))
    assert len(seen) == 2
    with pytest.raises(ConfigError, match="has no choice of sampler"):
        _learner(sampler="ddim")


def test_bad_sampler_names_are_refused_naming_the_key_and_the_registered_ones():
    for key in ("sampler", "target_sampler", "q_sampler"):
        with pytest.raises((ConfigError, ValueError)) as err:
            _learner(**{key: "dpm-solver"})
        text = str(err.value)
        assert "'dpm-solver'" in text and "ddim, ddpm, dpm-solver++" in text and key in text
    with pytest.raises(ValueError, match=r"default_sampler: unknown sampler 'nope'; registered samplers: ddim, ddpm, dpm-solver\+\+"):
        DiffusionHead(3, 2, default_sampler="nope")
    res = CliRunner().invoke(main, ["train", "--env", BANDIT, "--steps", "1", "--out", "/nonexistent/x", "-p", "sampler=ddmp"])
    assert res.exit_code != 0 and "ddmp" in res.output and "registered samplers: ddim, ddpm, dpm-solver++" in res.output


def test_list_keys_shows_the_sampler_keys_with_help():
    out = CliRunner().invoke(main, ["list", "keys"]).output
    for key, words in (("sampler", "acting"), ("target_sampler", "next actions"), ("q_sampler", "solver"),
                       ("q_sample_steps", "reverse steps"), ("default_sampler", "dpm-solver++")):
        line = next((ln for ln in out.splitlines() if ln.split() and ln.split()[0] == key), "")
        assert words in line, f"{key}: {line!r}"
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert lines["n_candidates"].endswith(", >= 1, <= 10,000"), lines["n_candidates"]  # the declared maxima are shown
    assert lines["batch_size"].endswith(", >= 1, <= 16,777,216"), lines["batch_size"]
    listing = CliRunner().invoke(main, ["list"]).output
    assert "edp" in listing.split("agents:")[1].splitlines()[0]
    assert "samplers: ddim, ddpm, dpm-solver++" in listing


# --- a new sampler is a new registration -------------------------------------------------------------------------

class CountingDDIM(Sampler):
    """A test sampler: DDIM's coefficients without the kernels' layout (so the head runs its loop), counting runs."""

    runs = 0

    def plan(self, abar, t_index):
        c = DDIM().plan(abar, t_index)
        del c["packed"]
        return c

    def run(self, plan, noise, x0_fn, grad_from=0):
        type(self).runs += 1
        return super().run(plan, noise, x0_fn, grad_from)


@pytest.fixture
def counting_sampler():
    SAMPLERS.register("test-counting-ddim", CountingDDIM)
    CountingDDIM.runs = 0
    yield "test-counting-ddim"
    SAMPLERS.unregister("test-counting-ddim")


def test_a_sampler_registered_in_a_test_is_used_by_train(counting_sampler, tmp_path: Path):
    head = make_head(T=6, max_action=1e6)
    obs, noise = torch.randn(1, 4, 3), torch.randn(1, 6, 4, 2)
    with torch.no_grad():  # the same numbers as the built-in ddim, through the plugin's own loop
        torch.testing.assert_close(head.sample(obs, None, noise=noise, sampler=counting_sampler),
                                   head.sample(obs, None, noise=noise, sampler="ddim"))
    assert CountingDDIM.runs == 1
    head.chain_kernel = lambda *a: (_ for _ in ()).throw(AssertionError("a sampler with its own run never reaches the kernels"))
    with torch.no_grad():
        head.sample(obs, None, noise=noise, sampler=counting_sampler)
    assert CountingDDIM.runs == 2
    CountingDDIM.runs = 0
    args = ["train", "--env", BANDIT, "--steps", "4", "--out", str(tmp_path / "run"), "--no-progress",
            "-p", "T=3", "-p", "hidden=16", "-p", "critic_hidden=16", "-p", "batch_size=16", "-p", "n_candidates=4",
            "-p", f"sampler={counting_sampler}", "-p", "sample_steps=2"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert CountingDDIM.runs >= 1  # the final evaluation acted with it
    saved = dqltoolkit.load(str(tmp_path / "run" / "model.zip"), device="cpu")
    assert saved.config.sampler == counting_sampler and saved.config.sample_steps == 2


# --- the bandit: the T = 50 zoo model, sampled with 10 DPM-Solver++ steps ----------------------------------------

def test_dpm_solver_pp_with_10_steps_keeps_the_zoo_bandit_model_on_the_best_mode():
    model = dqltoolkit.load("zoo:diffusion-ql-bandit2d-v0", device="cpu")
    assert model.config.T == 50
    fast = model.config.replace(sampler="dpm-solver++", sample_steps=10)
    model.learner.config = model.config = fast
    shares = mode_shares(sample_policy_actions(model, 1000, seed=0))
    assert shares[MODE_NAMES[BEST_MODE]] >= 0.90, shares
    # (timed, not asserted: the report compares predict with 10 dpm-solver++ steps and the 50-step ddpm chain)
    obs = np.zeros((1, 2), np.float32)

    def per_call(cfg):
        model.learner.config = model.config = cfg
        model.predict(obs)
        t0 = time.perf_counter()
        for _ in range(20):
            model.predict(obs)
        return (time.perf_counter() - t0) / 20

    slow = per_call(fast.replace(sampler="ddpm", sample_steps=0))
    quick = per_call(fast)
    print(f"\npredict, 1 obs x {fast.n_candidates} candidates: ddpm 50 steps {1e3 * slow:.2f} ms, "
          f"dpm-solver++ 10 steps {1e3 * quick:.2f} ms ({slow / quick:.1f}x)")


# --- export: the graph samples with the configured acting sampler ----------------------------------------------

def test_onnx_export_of_an_edp_agent_acts_like_predict_with_dpm_solver_pp(tmp_path: Path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dqltoolkit import Agent
    from dqltoolkit.export import ActingGraph, compare_actions, export_policy, load_runner, predict_draws, read_metadata

    agent = Agent.from_task("edp", BANDIT, device="cpu", T=8, hidden=16, critic_hidden=16, n_candidates=4, batch_size=32,
                            sample_steps=4, target_sample_steps=3)
    agent.learn(3)
    assert agent.config.sampler == "dpm-solver++"
    for deterministic in (False, True):
        path = export_policy(agent, tmp_path / f"edp_{deterministic}.onnx", "onnx", deterministic=deterministic)
        meta = read_metadata(path)
        assert meta["sampler"] == "dpm-solver++" and meta["steps"] == 4
        graph = ActingGraph(agent, deterministic=deterministic)
        run = load_runner(path)
        for batch in (1, 5):
            obs = np.random.default_rng(batch).uniform(-1, 1, (batch, agent.obs_dim)).astype(np.float32)
            inputs = {"obs": obs} if deterministic else {"obs": obs, **{k: v.numpy() for k, v in predict_draws(agent, graph, batch).items()}}
            expected = agent.predict(obs, deterministic=deterministic)[0]
            res = compare_actions(graph, inputs, expected, run(inputs))
            assert res["mismatches"] == [] and res["max_diff"] < 1e-5 and len(res["ties"]) <= 1, res
    # the eager graph with another sampler gives other actions for the same inputs (the choice is really used)
    inputs = {k: torch.as_tensor(v) for k, v in {"obs": obs, **predict_draws(agent, ActingGraph(agent), 5)}.items()}
    with torch.no_grad():
        a = ActingGraph(agent)(*inputs.values())
        b = ActingGraph(agent, sampler="ddpm")(*inputs.values())
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="registered"):
        ActingGraph(agent, sampler="nope")


def test_bench_sampler_rows_time_acting_and_the_edp_step_beside_the_others():
    from dqltoolkit.bench.throughput import run_benchmark

    res = run_benchmark("cpu", steps=1, repeats=1, warmup=0, dataset_size=512, rows=["reference", "samplers"])
    names = [r.name for r in res["rows"]]
    assert names == ["reference", "recipe edp", "edp, ddpm 50-step targets"]
    assert all(r.vs_reference > 0 and r.gflop_per_step > 0 for r in res["rows"])
    # the 50-step next actions cost more matrix work than 15 solver steps
    assert res["rows"][2].gflop_per_step > res["rows"][1].gflop_per_step
    evals = [e["name"] for e in res["eval"]]
    assert evals == [f"predict T 50, {label}, {n} env(s) x 50 candidates" for label in
                     ("ddpm, 50 steps", "dpm-solver++, 10 steps", "dpm-solver++, 15 steps", "ddim, 10 steps") for n in (1, 10)]
    assert all(e["ms_per_call"] > 0 for e in res["eval"])


def test_a_checkpoint_naming_an_unknown_sampler_is_refused_naming_the_key(tmp_path: Path):
    import io
    import json
    import zipfile

    import gymnasium as gym

    from dqltoolkit import Agent
    from dqltoolkit.checkpoint import CheckpointError

    box = gym.spaces.Box(-1, 1, (2,), np.float32)
    saved = Agent(AgentConfig(T=3, hidden=8, critic_hidden=8, n_candidates=2), box, box, device="cpu").save(tmp_path / "m.zip")
    for key, value in (("sampler", "evil" * 50), ("default_sampler", "nope"), ("q_sampler", "x")):
        out = io.BytesIO()
        with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(out, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if item.filename == "dqltoolkit.json":
                    doc = json.loads(data)
                    doc["config"][key] = value
                    data = json.dumps(doc).encode()
                zout.writestr(item, data)
        bad = tmp_path / f"{key}.zip"
        bad.write_bytes(out.getvalue())
        with pytest.raises(CheckpointError, match=rf"{key}.*registered samplers: ddim, ddpm, dpm-solver\+\+") as err:
            Agent.load(str(bad), device="cpu")
        assert "evil" * 16 not in str(err.value)  # a long name is cut
