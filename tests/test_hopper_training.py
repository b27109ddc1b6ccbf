"""Diffusion-QL on a tiny Hopper dataset: train a few hundred steps, evaluate in a vector env, score."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dqltoolkit
from dqltoolkit.cli import main
from dqltoolkit.data.minari_writer import rollout_episodes, write_minari


@pytest.fixture
def tiny_hopper(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    eps = rollout_episodes("Hopper-v5", lambda o: rng.uniform(-1, 1, 3).astype(np.float32), n_steps=400, seed=0)
    write_minari("dqltoolkit/hopper/medium-v0", eps, "Hopper-v5", ref_min=-20.272305, ref_max=3234.3)
    return eps


def test_train_and_evaluate_on_hopper(tiny_hopper, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = ["train", "--agent", "diffusion-ql", "--env", "hopper-medium-v2", "--steps", "300", "--out", str(out), "--no-progress",
            "--eval-freq", "150", "-p", "hidden=64", "-p", "critic_hidden=64", "-p", "batch_size=64", "-p", "n_candidates=10",
            "-p", "eval_episodes=3", "-p", "normalize_obs=true", "-p", "log_every=150"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    ev = results["evaluation"][0]
    assert ev["episodes"] == 3 and np.isfinite(ev["mean_return"])
    assert ev["normalized_score"] == pytest.approx(100 * (ev["mean_return"] + 20.272305) / (3234.3 + 20.272305))
    assert [e["step"] for e in results["evaluations"]] == [150, 300]
    import csv

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["time/step"] for r in rows if r["eval/normalized_score"]] == ["150", "300"]  # each evaluation at its own step
    model = dqltoolkit.load(out / "model.zip")
    # observation statistics travel with the checkpoint and are applied in predict
    obs = np.concatenate([e["observations"][:-1] for e in tiny_hopper])
    np.testing.assert_allclose(model.obs_mean.numpy(), obs.mean(0), rtol=1e-4, atol=1e-5)
    a, _ = model.predict(obs[:5])
    assert a.shape == (5, 3) and np.all(np.abs(a) <= 1)
    r = CliRunner().invoke(main, ["evaluate", str(out / "model.zip"), "--episodes", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["env"] == "hopper-medium-v2"


def test_minari_and_d4rl_prefixed_task_ids(tiny_hopper, tmp_path):
    import h5py

    from dqltoolkit.tasks import get_task

    task = get_task("minari:dqltoolkit/hopper/medium-v0")
    assert task.eval_env == "Hopper-v5" and task.ref_max == pytest.approx(3234.3)
    assert len(task.load_dataset()["observations"]) == sum(len(e["actions"]) for e in tiny_hopper)
    path = tmp_path / "mydata.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((10, 4))
        f["actions"] = np.full((10, 2), 0.5)
        f["rewards"] = np.ones(10)
        f["terminals"] = np.zeros(10, bool)
    res = dqltoolkit.train("diffusion-bc", f"d4rl:{path}", tmp_path / "r", steps=3, overrides={"T": 2, "hidden": 8, "batch_size": 4}, progress=False, verbose=False)
    m = dqltoolkit.load(res.checkpoints[0])
    assert m.observation_space.shape == (4,) and m.action_space.shape == (2,) and "evaluation" not in res.results


def test_learning_curves_show_the_evaluation_score(tmp_path):
    from dqltoolkit.plots import plot_learning_curves

    csv = tmp_path / "metrics.csv"
    csv.write_text("time/step,train/actor_loss,train/critic_loss,eval/mean_return,eval/normalized_score\n"
                   "100,1.0,2.0,,\n200,0.8,1.5,300.0,9.8\n300,0.7,1.2,,\n400,0.6,1.1,350.0,11.3\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured = {}
    real = plt.subplots

    def spy(*a, **k):
        fig, axes = real(*a, **k)
        captured["axes"] = axes
        return fig, axes

    plt.subplots = spy
    try:
        assert plot_learning_curves(csv, tmp_path / "c.png") == tmp_path / "c.png"
    finally:
        plt.subplots = real
    titles = [ax.get_title() for ax in captured["axes"][0]]
    assert titles == ["train/actor_loss", "train/critic_loss", "eval/normalized_score"]
    xs, ys = captured["axes"][0][2].lines[0].get_data()
    assert list(xs) == [200.0, 400.0] and list(ys) == [9.8, 11.3]
