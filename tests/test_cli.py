"""The command line as a user meets it: a short training run, its files, and errors that name the problem."""

import csv
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import dqltoolkit
from dqltoolkit.cli import main

TINY_ARGS = ["-p", "T=3", "-p", "hidden=16", "-p", "critic_hidden=16", "-p", "batch_size=32", "-p", "n_candidates=4", "-p", "log_every=5"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_train_writes_model_config_metrics_and_figure(tmp_path):
    out = tmp_path / "run"
    res = run(["train", "--agent", "diffusion-ql", "--env", "bandit2d-v0", "--steps", "12", "--seed", "3", "--out", str(out), "--no-progress", *TINY_ARGS])
    assert res.exit_code == 0, res.output
    for name in ("model.zip", "config.yaml", "metrics.csv", "bandit.png", "results.json"):
        assert (out / name).is_file(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["config"]["T"] == 3 and cfg["config"]["steps"] == 12 and cfg["seeds"] == [3]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(float(r["time/step"])) for r in rows] == [5, 10, 12]
    assert all(np.isfinite(float(r["train/critic_loss"])) for r in rows)
    results = json.loads((out / "results.json").read_text())
    shares = results["evaluation"][0]["mode_shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    model = dqltoolkit.load(out / "model.zip")
    assert model.num_timesteps == 12 and model.task == "bandit2d-v0" and model.seeds == [3]
    assert "policy samples on modes" in res.output and "saved" in res.output


def test_train_accepts_a_recipe_file(tmp_path):
    recipe = tmp_path / "my.yaml"
    recipe.write_text("default:\n  head: diffusion\n  objective: bc\n  T: 2\n  hidden: 8\n  batch_size: 16\n  log_every: 2\n")
    res = run(["train", "--agent", str(recipe), "--env", "bandit2d-v0", "--steps", "4", "--out", str(tmp_path / "r"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert dqltoolkit.load(tmp_path / "r" / "model.zip").config.objective == "bc"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--agent", "difusion-ql"], "unknown agent 'difusion-ql'. Did you mean 'diffusion-ql'"),
        (["--env", "bandit2d-v1"], "unknown env 'bandit2d-v1'. Did you mean 'bandit2d-v0'"),
        (["--head", "gausian"], "unknown head 'gausian'"),
        (["-p", "etta=1"], "unknown key 'etta'. Did you mean 'eta'"),
        (["-p", "eta=high"], "eta='high' is not a valid float"),
        (["-p", "T"], "expected key=value"),
        (["--agent", "missing.yaml"], "recipe file missing.yaml does not exist"),
        (["--seeds", "3-1"], "seeds '3-1'"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, args, message):
    base = {"--agent": "diffusion-ql", "--env": "bandit2d-v0"}
    for k in ("--agent", "--env"):
        if k in args:
            base.pop(k)
    full = ["train", *sum(([k, v] for k, v in base.items()), []), "--steps", "1", "--out", str(tmp_path / "o"), *args]
    res = run(full)
    assert res.exit_code != 0
    assert message in res.output


def test_recipe_with_unknown_key_names_file_and_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("default:\n  head: diffusion\n  learning_rate: 1.0e-3\n")
    res = run(["train", "--agent", str(recipe), "--env", "bandit2d-v0", "--steps", "1", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "bad.yaml [default]: unknown key 'learning_rate'" in res.output


def test_list_shows_registered_parts():
    res = run(["list"])
    assert res.exit_code == 0
    lines = dict(line.split(": ", 1) for line in res.output.strip().splitlines())
    assert {"diffusion-ql", "diffusion-bc"} <= set(lines["agents"].split(", "))
    assert "diffusion" in lines["heads"].split(", ") and {"double-q", "ensemble-q"} <= set(lines["critics"].split(", "))
    assert {"bc", "ql"} <= set(lines["objectives"].split(", ")) and "bandit2d-v0" in lines["envs"].split(", ")
    assert "diffusion-ql-bandit2d-v0" in lines["zoo"].split(", ")


def test_evaluate_command_reports_return(tmp_path):
    out = tmp_path / "run"
    assert run(["train", "--env", "bandit2d-v0", "--steps", "3", "--out", str(out), "--no-progress", *TINY_ARGS]).exit_code == 0
    res = run(["evaluate", str(out / "model.zip"), "--episodes", "20", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["episodes"] == 20 and r["env"] == "bandit2d-v0" and np.isfinite(r["mean_return"])
    bad = run(["evaluate", str(tmp_path / "nope.zip")])
    assert bad.exit_code != 0 and "nope.zip does not exist" in bad.output


def test_several_seeds_in_one_process_write_one_checkpoint_each_and_a_summary(tmp_path):
    out = tmp_path / "multi"
    res = run(["train", "--env", "bandit2d-v0", "--steps", "4", "--seeds", "0-2", "--out", str(out), "--no-progress", *TINY_ARGS])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    per_seed = [e["mean_return"] for e in results["evaluation"]]
    assert [e["seed"] for e in results["evaluation"]] == [0, 1, 2]
    assert results["mean_return"] == pytest.approx(np.mean(per_seed)) and results["std_return_over_seeds"] == pytest.approx(np.std(per_seed))
    for s in (0, 1, 2):
        m = dqltoolkit.load(out / f"model_seed{s}.zip")
        assert m.seeds == [s] and m.members == 1 and m.num_timesteps == 4
        assert (out / f"bandit_seed{s}.png").is_file()
    assert "over seeds: mean return" in res.output


def test_head_option_swaps_the_policy_class(tmp_path):
    out = tmp_path / "g"
    gaussian_args = TINY_ARGS[2:]  # a Gaussian head reads no T
    res = run(["train", "--agent", "diffusion-ql", "--head", "gaussian", "--env", "bandit2d-v0", "--steps", "3", "--out", str(out), "--no-progress",
               *gaussian_args])
    assert res.exit_code == 0, res.output
    m = dqltoolkit.load(out / "model.zip")
    assert (m.config.head, m.config.objective) == ("gaussian", "ql")
    assert type(m.head).__name__ == "GaussianHead"
    assert m.config.hidden == 16  # a key both heads read carries over
    # the recipe's diffusion-only keys are dropped with the head; one given explicitly is refused, naming its owner
    res = run(["train", "--agent", "diffusion-ql", "--head", "gaussian", "--env", "bandit2d-v0", "--steps", "3", "--out", str(out / "x"),
               "--no-progress", *TINY_ARGS])
    assert res.exit_code != 0 and "key 'T' is not read by this agent's parts" in res.output and "head 'diffusion'" in res.output


def test_interrupted_training_keeps_its_model_and_resumes(tmp_path, monkeypatch):
    from dqltoolkit.agent import Agent

    out = tmp_path / "run"
    real = Agent.train_step
    calls = {"n": 0}

    def interrupt_after_5(self, batch=None):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(Agent, "train_step", interrupt_after_5)
    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--steps", "20", "--out", str(out), "--no-progress", *TINY_ARGS])
    assert res.exit_code == 130 and "model_interrupted.zip" in res.output
    saved = dqltoolkit.load(out / "model_interrupted.zip")
    assert saved.num_timesteps == 5
    monkeypatch.setattr(Agent, "train_step", real)
    res = run(["train", "--env", "bandit2d-v0", "--resume", str(out / "model_interrupted.zip"), "--steps", "7", "--out", str(tmp_path / "more"), "--no-progress"])
    assert res.exit_code == 0, res.output
    resumed = dqltoolkit.load(tmp_path / "more" / "model.zip")
    assert resumed.num_timesteps == 12 and resumed.config.T == 3 and resumed.config.hidden == 16


def test_device_option_is_checked(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    res = run(["train", "--env", "bandit2d-v0", "--steps", "1", "--device", "cuda", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "device 'cuda' requested but CUDA is not available on this machine" in res.output
    ok = run(["train", "--env", "bandit2d-v0", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "c"), "--no-progress", *TINY_ARGS])
    assert ok.exit_code == 0 and dqltoolkit.load(tmp_path / "c" / "model.zip").device.type == "cpu"
