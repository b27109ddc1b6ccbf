"""Choosing a checkpoint without the simulator: FQE (dqltoolkit/fqe.py) and `dqltoolkit select` over a run's kept
checkpoints (train --save-every N --keep-checkpoints K)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dqltoolkit.agent import Agent
from dqltoolkit.envs.bandit2d import MODE_CENTRES, mode_of
from dqltoolkit.evaluation import evaluate
from dqltoolkit.fqe import FQEConfig, estimate, estimate_many
from dqltoolkit.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
TINY = ["-p", "T=3", "-p", "hidden=16", "-p", "critic_hidden=16", "-p", "time_dim=8", "-p", "batch_size=32", "-p", "n_candidates=4",
        "-p", "log_every=50", "-p", "eval_freq=100"]


def _one_mode(table, mode):
    keep = mode_of(table["actions"]) == mode
    return {k: v[keep] for k, v in table.items()}


def test_fqe_ranks_a_good_and_a_bad_checkpoint_of_the_bandit():
    """Two behaviour-cloned policies that act inside the data: one on the best mode (reward 5), one on the worst (0).
    FQE, fitted on the whole dataset, must value them in the order the simulator does."""
    torch.manual_seed(0)
    task = get_task("bandit2d-v0")
    table = task.load_dataset()
    agents = {}
    for name, mode in (("good", 3), ("bad", 1)):
        a = Agent.from_task("gaussian-bc", "bandit2d-v0", seeds=[0], hidden=64, log_every=100)
        a.set_dataset(_one_mode(table, mode))
        a.learn(300)
        acted = a.act(torch.zeros(1, 1, 2), deterministic=True)[0, 0].numpy()
        assert np.linalg.norm(acted - MODE_CENTRES[mode]) < 0.2, (name, acted)  # it acts inside the data's support
        agents[name] = a
    online = {n: evaluate(a, task.make_env, episodes=200, seed=100)["mean_return"] for n, a in agents.items()}
    traces = {n: {} for n in agents}
    fqe = {n: estimate(a, table, gamma=0.0, cfg=FQEConfig(steps=600, subset=5000), trace=traces[n], trace_every=200)[0]
           for n, a in agents.items()}
    assert online["good"] > 4.5 and online["bad"] < 0.5
    # the trace: J along the fit, its last entry the estimate itself; the good policy's value climbs towards 5
    assert list(traces["good"]) == [200, 400, 600] and traces["good"][600] == [fqe["good"]]
    assert traces["good"][200][0] < traces["good"][600][0]
    assert fqe["good"] > fqe["bad"] + 2.5, fqe
    assert abs(fqe["good"] - 5.0) < 1.0 and abs(fqe["bad"]) < 1.0, fqe  # a reward model where the data is
    # both fitted side by side as members of one fit (as benchmarks/fqe_horizon.py does): same order, each value its
    # own policy's (within what the members' different initial weights change), the trace holding both in order
    trace = {}
    good, bad = estimate_many([agents["good"], agents["bad"]], table, gamma=0.0, cfg=FQEConfig(steps=600, subset=5000),
                              trace=trace, trace_every=300)
    assert len(good) == len(bad) == 1 and trace[600] == good + bad
    assert abs(good[0] - fqe["good"]) < 0.5 and abs(bad[0] - fqe["bad"]) < 0.5, (good, bad, fqe)
    with pytest.raises(ValueError, match="no policies"):
        estimate_many([], table)


def _env():
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def test_select_ranks_a_runs_kept_checkpoints_and_reports_regret(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "dqltoolkit.cli", "train", "--env", "bandit2d-v0", "--seeds", "0-1", "--steps", "300", *TINY,
                          "--save-every", "100", "--keep-checkpoints", "2", "--out", str(out), "--no-progress", "--threads", "1"],
                         env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.glob("model_step*.zip")) == ["model_step200.zip", "model_step300.zip"]  # the last K only
    sel = subprocess.run([sys.executable, "-m", "dqltoolkit.cli", "select", str(out), "--fqe-steps", "200", "--threads", "1"],
                         env=_env(), capture_output=True, text=True)
    assert sel.returncode == 0, sel.stderr
    assert "| step | BC loss (block mean) | FQE value | online score |" in sel.stdout and "picks: bc -> step" in sel.stdout
    doc = json.loads((out / "selection.json").read_text())
    assert doc["top_k"] == 1 and sorted(doc["checkpoints"]) == ["200", "300"]
    results = json.loads((out / "results.json").read_text())
    for m, e in enumerate(doc["seeds"]):
        assert [r["step"] for r in e["rows"]] == [200, 300] and set(e["picks"]) == {"bc", "fqe"}
        online = {ev["step"]: ev["mean_return_per_seed"][m] for ev in results["evaluations"]}
        assert [r["online"] for r in e["rows"]] == [pytest.approx(online[200]), pytest.approx(online[300])]
        best = max(online[200], online[300])
        assert e["regret"] == {rule: pytest.approx(best - online[st]) for rule, st in e["picks"].items()}
        # the BC-loss rule with top_k 1 and two checkpoints picks the one with the higher block mean
        losses = {r["step"]: r["bc_loss"] for r in e["rows"]}
        assert e["picks"]["bc"] == max(losses, key=losses.get)
        # over two checkpoints a rank correlation is +1 (the rule orders them as the returns do) or -1
        rising = online[300] > online[200]
        fqe_rising = e["rows"][1]["fqe"] > e["rows"][0]["fqe"]
        assert e["rank_correlation"]["fqe"] == (1.0 if fqe_rising == rising else -1.0)
        assert e["rank_correlation"]["bc"] == (1.0 if (losses[300] < losses[200]) == rising else -1.0)
        # how far each fit's J moved over its last tenth, and the checkpoints whose fit it calls unsettled
        assert all(r["fqe_drift"] >= 0.0 for r in e["rows"])
        assert e.get("fqe_unsettled", []) == [r["step"] for r in e["rows"] if r["fqe_drift"] > 0.10]
    assert "rank correlation with the online scores (Spearman): bc " in sel.stdout
    # the figure: one panel per seed with the online curve, FQE's values on a second axis and both picks marked
    assert (out / "selection.png").stat().st_size > 10_000
    from dqltoolkit.select_job import selection_figure

    fig = selection_figure(doc)
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(panels) == 2 and all(ax.get_ylabel() == "online evaluation" for ax in panels)
    for ax, e in zip(panels, doc["seeds"]):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["online evaluation", "FQE value", "bc pick", "fqe pick"], labels
        assert ax.get_title().startswith(f"seed {e['seed']}: regret bc ")
        picks = [line.get_xdata()[0] for line in ax.lines if line.get_label().endswith(" pick")]
        assert picks == [e["picks"]["bc"], e["picks"]["fqe"]]
    assert sorted(ax.get_ylabel() for ax in fig.axes if not ax.get_xlabel()) == ["FQE value J", "FQE value J"]
    # the two checkpoints fitted together (one fit, the same batches): the values estimate_many gives, recorded with how
    together = subprocess.run([sys.executable, "-m", "dqltoolkit.cli", "select", str(out), "--fqe-steps", "150", "--threads", "1",
                               "--checkpoints", "300,200", "--fqe-together", "--json"], env=_env(), capture_output=True, text=True)
    assert together.returncode == 0, together.stderr
    doc = json.loads((out / "selection.json").read_text())
    assert doc["fqe_settings"]["steps"] == 150 and doc["fqe_settings"]["together"] is True
    torch.set_num_threads(1)
    table = get_task("bandit2d-v0").load_dataset()
    want = estimate_many([Agent.load(out / "model_step200.zip"), Agent.load(out / "model_step300.zip")], table, cfg=FQEConfig(steps=150))
    for m, e in enumerate(doc["seeds"]):
        assert [r["fqe"] for r in e["rows"]] == [pytest.approx(want[0][m], rel=1e-5), pytest.approx(want[1][m], rel=1e-5)]
    for bad, said in (("100,200", "no checkpoint at step(s) [100]; it has [200, 300]"), ("200,x", "--checkpoints: 'x' is not a step")):
        res = subprocess.run([sys.executable, "-m", "dqltoolkit.cli", "select", str(out), "--checkpoints", bad, "--threads", "1"],
                             env=_env(), capture_output=True, text=True)
        assert res.returncode == 1 and said in res.stderr, res.stderr


def test_select_says_what_a_run_without_kept_checkpoints_needs(tmp_path):
    from click.testing import CliRunner

    from dqltoolkit.cli import main

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("seeds: [0]\nenv: bandit2d-v0\n")
    res = CliRunner().invoke(main, ["select", str(tmp_path / "r")])
    assert res.exit_code == 1 and "0 checkpoint(s) to choose from; train with --save-every N --keep-checkpoints K" in res.output
    res = CliRunner().invoke(main, ["select", str(tmp_path / "r"), "--rules", "oracle"])
    assert res.exit_code == 1 and "unknown rule(s) ['oracle']" in res.output


def test_spearman_is_the_rank_correlation_with_ties_averaged():
    """Checked against values worked by hand (scipy.stats.spearmanr gives the same): the measure of how well an
    offline rule orders the checkpoints, reported by `dqltoolkit select` beside each pick's regret."""
    from dqltoolkit.stats import ranks, spearman

    assert ranks([3.0, 1.0, 2.0, 2.0, 5.0]).tolist() == [4.0, 1.0, 2.5, 2.5, 5.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) against (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / np.sqrt(22.5))
    # monotone transforms change nothing: only the order counts
    x, y = np.array([0.3, 2.0, -1.0, 5.0, 4.0]), np.array([1.0, 0.0, 2.0, 8.0, 3.0])
    assert spearman(np.exp(x), y ** 3) == pytest.approx(spearman(x, y)) == pytest.approx(1 - 6 * 8 / (5 * 24))  # d = (0, 2, -2, 0, 0)
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])) and np.isnan(spearman([1.0], [2.0]))
    with pytest.raises(ValueError, match="3 values against 2"):
        spearman([1, 2, 3], [1, 2])


def test_two_rankings_of_one_run_share_the_fqe_cache_instead_of_overwriting_it(tmp_path, monkeypatch):
    """Two `select` processes over one folder: each checkpoint's estimate is added to what is on disk (under a lock),
    so an entry another process wrote while this one was fitting is kept, and a checkpoint the other finished
    meanwhile is read, not fitted again."""
    import dqltoolkit.fqe as fqe

    ckpts = {}
    for step in (100, 200, 300):
        ckpts[step] = tmp_path / f"model_step{step}.zip"
        ckpts[step].write_bytes(b"x" * step)
    cache = tmp_path / "fqe_cache.json"
    cfg = FQEConfig(steps=10)

    def key(step):
        st = ckpts[step].stat()
        return f"{ckpts[step].name}|{st.st_size}|{st.st_mtime_ns}|{sorted(fqe.asdict(cfg).items())}|{fqe.FIT_VERSION}"

    fitted = []

    def fake_estimate_many(agents, table, cfg, trace, trace_every):  # the other process finishes step 300 meanwhile
        assert trace_every == 1  # a tenth of the fit's 10 steps: how far J moved over the last tenth is kept
        fitted.append(agents[0])
        if agents[0] == str(ckpts[100]):
            cache.write_text(json.dumps({**json.loads(cache.read_text() or "{}"), key(300): [3.0], "other|entry": [9.0]}))
        value = float(len(fitted))
        trace.update({9: [0.75 * value], 10: [value]})  # J moved by a quarter of its value over the last tenth
        return [[value]]

    monkeypatch.setattr(fqe, "estimate_many", fake_estimate_many)
    monkeypatch.setattr(fqe.Agent, "load", staticmethod(lambda path, device="cpu": str(path)))
    cache.write_text("{}")
    drifts = {}
    out = fqe.estimates_by_checkpoint({s: str(p) for s, p in ckpts.items()}, {}, cfg, cache=cache, drifts=drifts)
    assert out == {100: [1.0], 200: [2.0], 300: [3.0]} and fitted == [str(ckpts[100]), str(ckpts[200])]
    assert drifts == {100: [0.25], 200: [0.25]}  # step 300's entry came without one
    assert json.loads(cache.read_text()) == {key(100): [1.0], key(200): [2.0], key(300): [3.0], "other|entry": [9.0],
                                             key(100) + "|drift": [0.25], key(200) + "|drift": [0.25]}
    assert not list(tmp_path.glob("*.tmp"))


def test_fqe_horizon_reads_members_checkpoint_by_checkpoint():
    """benchmarks/fqe_horizon.py: the trace lists each checkpoint's seeds together; the rank correlation per seed and
    fitting step must pair each seed's values with that seed's online scores."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fqe_horizon_under_test", ROOT / "benchmarks" / "fqe_horizon.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # 3 checkpoints x seeds (0, 1): seed 0's J rises with the checkpoints, seed 1's falls, at step 100; at 200 both rise
    trace = {100: [1.0, 9.0, 2.0, 8.0, 3.0, 7.0], 200: [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]}
    online = {0: [10.0, 20.0, 30.0], 1: [5.0, 6.0, 7.0]}
    rho = mod.rank_correlations(trace, online, 3)
    assert rho == {100: {0: 1.0, 1: -1.0}, 200: {0: 1.0, 1: 1.0}}


def test_an_unsettled_fqe_fit_is_flagged_with_how_far_j_still_moved():
    """J climbing 20% over the last tenth of the fit (hopper at 20,000 steps moved 20-40%) is unsettled; a few
    percent is not; `select`'s table says which checkpoints and by how much, and what to do."""
    from dqltoolkit.fqe import drift
    from dqltoolkit.select_job import selection_table

    assert drift({10: [1.0, 5.0], 90: [80.0, 100.0], 100: [100.0, 102.0]}) == [pytest.approx(0.2), pytest.approx(2 / 102)]
    doc = {"seeds": [{"seed": 0, "picks": {"fqe": 200}, "fqe_unsettled": [100],
                      "rows": [{"step": 100, "fqe": 1.0, "fqe_drift": 0.2, "online": None},
                               {"step": 200, "fqe": 2.0, "fqe_drift": 0.02, "online": None}]}]}
    text = "\n".join(selection_table(doc))
    assert "FQE has not settled for 1 of 2 checkpoints (J moved by up to 20% over the last tenth of the fit" in text
    assert "raise --fqe-steps" in text
    doc["seeds"][0].pop("fqe_unsettled")
    assert "not settled" not in "\n".join(selection_table(doc))
