"""Export of the acting policy (dqltoolkit/export.py): parity with ``predict`` for every shipped head, in
onnxruntime and TorchScript, single and batched observations from one export (dynamic batch), the numpy-only
deployment example, and the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqltoolkit import Agent
from dqltoolkit.config import load_recipe

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dqltoolkit.export import (  # noqa: E402
    ActingGraph,
    ExportError,
    act_latency,
    compare_actions,
    draw_inputs,
    export_policy,
    load_runner,
    predict_draws,
    read_metadata,
)

from .conftest import random_table, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = dict(T=3, hidden=16, critic_hidden=16, n_candidates=4, batch_size=32)
#: one recipe per shipped head (bcq: the cvae head with BCQ's perturbed, greedy acting)
RECIPES = {"diffusion": "diffusion-ql", "gaussian": "ql-gaussian", "deterministic": "td3bc", "cvae": "bcq", "consistency": "consistency-ql"}
_AGENTS: dict = {}


def trained(recipe: str) -> Agent:
    """The recipe on the bandit at tiny sizes (only keys its parts read), trained 3 steps; one per session."""
    if recipe not in _AGENTS:
        cfg, _ = load_recipe(recipe, "bandit2d-v0")
        keys = {k: v for k, v in SIZES.items() if k not in cfg.fit(**SIZES).dropped}
        agent = Agent.from_task(recipe, "bandit2d-v0", device="cpu", **keys)
        agent.learn(3)
        _AGENTS[recipe] = agent
    return _AGENTS[recipe]


def assert_parity(agent: Agent, path: Path, graph: ActingGraph, deterministic: bool = False) -> None:
    """One export, run on one observation and on seven: the actions ``predict`` gives (with the draws it makes)."""
    run = load_runner(path)
    for batch in (1, 7):
        obs = np.random.default_rng(batch).uniform(-1, 1, (batch, agent.obs_dim)).astype(np.float32)
        inputs = {"obs": obs, **{k: v.numpy() for k, v in predict_draws(agent, graph, batch).items()}} if not deterministic else {"obs": obs}
        expected = agent.predict(obs[0] if batch == 1 else obs, deterministic=deterministic)[0]
        assert expected.shape == ((agent.action_dim,) if batch == 1 else (batch, agent.action_dim))
        actual = run(inputs)
        assert actual.shape == (batch, agent.action_dim)
        res = compare_actions(graph, inputs, expected, actual)
        assert res["mismatches"] == [] and res["max_diff"] < 1e-5, res
        assert len(res["ties"]) <= 1, res  # a tie decided by rounding is rare; more would hide a real difference


@pytest.mark.parametrize("head", sorted(RECIPES))
def test_onnx_export_acts_like_predict(head, tmp_path):
    agent = trained(RECIPES[head])
    path = export_policy(agent, tmp_path / "policy.onnx", "onnx")
    onnx.checker.check_model(str(path), full_check=True)
    graph = ActingGraph(agent)
    meta = read_metadata(path)
    assert meta["candidates"] == 4 and meta["obs_dim"] == agent.obs_dim
    names = [i["name"] for i in meta["inputs"]]
    assert names == graph.input_names == [i.name for i in ort.InferenceSession(str(path)).get_inputs()]
    # what each head takes: noise (all but the deterministic head), uniform numbers (a softmax(Q) draw, not BCQ's argmax)
    assert ("noise" in names) == (head != "deterministic") and ("uniform" in names) == (head != "cvae")
    assert_parity(agent, path, graph)


@pytest.mark.parametrize("head", sorted(RECIPES))
def test_torchscript_export_acts_like_predict(head, tmp_path):
    agent = trained(RECIPES[head])
    path = export_policy(agent, tmp_path / "policy.pt", "torchscript")
    assert read_metadata(path)["inputs"][0]["name"] == "obs"
    assert_parity(agent, path, ActingGraph(agent))


@pytest.mark.parametrize("fmt,head", [("onnx", "diffusion"), ("torchscript", "gaussian"), ("torchscript", "cvae")])
def test_deterministic_export_is_predict_deterministic(fmt, head, tmp_path):
    agent = trained(RECIPES[head])
    path = export_policy(agent, tmp_path / f"policy.{fmt}", fmt, deterministic=True)
    meta = read_metadata(path)
    assert [i["name"] for i in meta["inputs"]] == ["obs"] and meta["deterministic"]
    assert_parity(agent, path, ActingGraph(agent, deterministic=True), deterministic=True)


def test_normalisation_bounds_steps_and_candidates_follow_the_agent(tmp_path):
    """Observation statistics and a Box that is not [-1, 1] enter the graph; --steps and --candidates
    change the chain and the candidates exactly as the recipe's sample_steps and n_candidates would."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act_space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32))
    agent = Agent(tiny_config(normalize_obs=True), obs_space, act_space, seeds=[0], device="cpu")
    table = random_table()
    table["observations"] = table["observations"] * 4 + 2
    agent.set_dataset(table)
    agent.learn(3)
    assert float(agent.obs_mean.abs().min()) > 1.0
    path = export_policy(agent, tmp_path / "p.onnx", "onnx", steps=2, candidates=3)
    meta = read_metadata(path)
    assert meta["steps"] == 2 and meta["candidates"] == 3
    assert meta["inputs"][1]["shape"] == [2, "batch*candidates", 2]  # the respaced chain's two noise draws
    agent.learner.config = agent.config.replace(sample_steps=2, n_candidates=3)
    assert_parity(agent, path, ActingGraph(agent, steps=2, candidates=3))
    out = load_runner(path)(draw_inputs(meta, (np.random.default_rng(0).standard_normal((50, 3)) * 4 + 2).astype(np.float32),
                                        np.random.default_rng(1)))
    assert (out >= act_space.low).all() and (out <= act_space.high).all() and out[:, 0].max() > 1.0


def test_a_multi_seed_agent_exports_seed_zero(tmp_path):
    agent = Agent(tiny_config(n_candidates=4), *[gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                                                  gym.spaces.Box(-1, 1, (2,), np.float32)], seeds=[0, 1], device="cpu")
    agent.set_dataset(random_table())
    agent.learn(3)
    path = export_policy(agent, tmp_path / "p.pt", "torchscript")
    graph = ActingGraph(agent)
    assert graph.head.net.layers[0].weight.shape[0] == 1 and graph.critic.q.layers[0].weight.shape[0] == 2  # seed 0's twins
    assert_parity(agent, path, graph)


def test_a_head_that_draws_beyond_its_noise_input_is_refused():
    """Randomness outside ``noise`` would make the exported graph differ from predict: export names it."""
    from dqltoolkit.heads.gaussian import GaussianHead
    from dqltoolkit.nn import member_randn

    class Jittery(GaussianHead):
        def sample(self, obs, generators, noise=None, steps=None):
            return super().sample(obs, generators, noise, steps) + 0.01 * member_randn(generators, obs.shape[1:2], obs.device)[..., None]

    agent = Agent(tiny_config(head="gaussian"), gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32),
                  device="cpu")
    agent.learner.head.__class__ = Jittery
    graph = ActingGraph(agent)
    with pytest.raises(ExportError, match="head 'gaussian' with objective 'ql' draws random numbers that its noise input does not cover"):
        graph(*graph.example_inputs(2))


def test_bad_options_are_refused_by_name(tmp_path):
    agent = trained("diffusion-ql")
    with pytest.raises(ExportError, match="format: expected one of onnx, torchscript, got 'tflite'"):
        export_policy(agent, tmp_path / "x", "tflite")
    with pytest.raises(ExportError, match="candidates: expected at least 1, got 0"):
        export_policy(agent, tmp_path / "x.pt", "torchscript", candidates=0)
    with pytest.raises(ExportError, match="steps: expected 0 .* got -1"):
        ActingGraph(agent, steps=-1)


def test_the_deployment_example_runs_without_torch(tmp_path):
    """docs/examples/deploy_onnx.py needs numpy and onnxruntime only, and draws the inputs the metadata describes."""
    agent = trained("diffusion-ql")
    path = export_policy(agent, tmp_path / "policy.onnx", "onnx")
    obs = [[0.3, -0.2], [0.0, 0.0], [-0.5, 0.9]]
    example = ROOT / "docs" / "examples" / "deploy_onnx.py"
    code = ("import runpy, sys\n"
            f"sys.argv = ['deploy_onnx.py', {str(path)!r}, '--obs', {json.dumps(obs)!r}, '--seed', '5']\n"
            f"runpy.run_path({str(example)!r}, run_name='__main__')\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print('torch-free')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "torch-free"
    actions = np.array(json.loads(lines[0]), np.float32)
    graph = ActingGraph(agent)
    inputs = draw_inputs(read_metadata(path), np.array(obs, np.float32), np.random.default_rng(5))
    with torch.no_grad():
        expected = graph(*[torch.from_numpy(inputs[n]) for n in graph.input_names]).numpy()
    res = compare_actions(graph, inputs, expected, actions)
    assert res["mismatches"] == [] and res["max_diff"] < 1e-5, res


def test_cli_export_writes_checks_and_describes_the_file(tmp_path):
    from click.testing import CliRunner

    from dqltoolkit.cli import main

    ckpt = trained("bcq").save(tmp_path / "model.zip")
    result = CliRunner().invoke(main, ["export", str(ckpt), "--format", "onnx", "--candidates", "6"])
    assert result.exit_code == 0, result.output
    out = Path(ckpt).with_suffix(".onnx")
    assert out.is_file() and read_metadata(out)["candidates"] == 6
    assert f"wrote {out} (onnx): obs ['batch', 2], noise ['batch*candidates', 4] -> action ['batch', 2]" in result.output
    assert "selection: argmax Q" in result.output and "MISMATCH" not in result.output
    result = CliRunner().invoke(main, ["export", str(ckpt), "--format", "torchscript", "--steps", "-2", "--out", str(tmp_path / "p.pt")])
    assert result.exit_code != 0 and "steps: expected 0 (the full chain) or a positive number of sampling steps, got -2" in result.output


def test_act_latency_rows_for_the_bench(tmp_path):
    agent = trained("ql-gaussian")
    path = export_policy(agent, tmp_path / "policy.onnx", "onnx")
    rows = act_latency(agent, path, batch_sizes=(1, 10), repeats=5, warmup=1)
    assert [r["name"] for r in rows] == ["predict, 1 obs x 4 candidates", "onnxruntime, 1 obs x 4 candidates",
                                         "predict, 10 obs x 4 candidates", "onnxruntime, 10 obs x 4 candidates"]
    assert all(r["ms_per_call"] > 0 and abs(r["calls_per_s"] * r["ms_per_call"] - 1e3) < 1e-6 for r in rows)
