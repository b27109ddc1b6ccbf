"""`dqltoolkit report`: the statistics against hand computations on a fixed table, and the job end to end
on run folders written by real (tiny) training runs, including a sweep with a crashed trial and broken files."""

import csv
import json
import random
import re
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

matplotlib.use("Agg")

from dqltoolkit import stats  # noqa: E402
from dqltoolkit.cli import main  # noqa: E402
from dqltoolkit.report import ReportError, build_report, find_run_dirs, gather, load_run  # noqa: E402
from dqltoolkit.report_plots import Curve, performance_profile_figure, report_curves_figure  # noqa: E402

# 3 algorithms x 2 tasks x 5 seeds, on the normalised scale (some runs above 100, some tied)
TABLE = {
    "A": {"t1": [10.0, 20.0, 30.0, 40.0, 95.0], "t2": [50.0, 55.0, 60.0, 65.0, 200.0]},
    "B": {"t1": [70.0, 70.0, 80.0, 110.0, 5.0], "t2": [90.0, 100.0, 100.0, 101.0, 30.0]},
    "C": {"t1": [-5.0, 0.0, 12.5, 12.5, 60.0], "t2": [33.0, 8.0, 71.0, 42.0, 99.0]},
}
TINY = {"T": 3, "hidden": 16, "critic_hidden": 16, "time_dim": 8, "batch_size": 32, "n_candidates": 4, "log_every": 2}


def _tasks(alg):
    return [np.array(TABLE[alg]["t1"]), np.array(TABLE[alg]["t2"])]


# hand versions: plain Python on lists, written from the definitions (docs/report.md), not from stats.py


def hand_iqm(per_task):
    pooled = sorted(v for task in per_task for v in task)
    cut = int(0.25 * len(pooled))  # scipy.stats.trim_mean(x, 0.25): floor(n / 4) from each end
    kept = pooled[cut:len(pooled) - cut]
    return sum(kept) / len(kept)


def hand_task_means(per_task):
    return [sum(task) / len(task) for task in per_task]


def hand_mean(per_task):
    means = hand_task_means(per_task)
    return sum(means) / len(means)


def hand_median(per_task):
    means = sorted(hand_task_means(per_task))
    mid = len(means) // 2
    return means[mid] if len(means) % 2 else (means[mid - 1] + means[mid]) / 2


def hand_gap(per_task, gamma=100.0):
    pooled = [min(v, gamma) for task in per_task for v in task]
    return gamma - sum(pooled) / len(pooled)


def test_aggregates_of_a_fixed_table_match_the_hand_computation():
    # algorithm A by hand: pooled sorted 10 20 30 40 50 55 60 65 95 200 -> middle six 30..65 -> 300/6 = 50;
    # task means 39 and 86 -> mean = median = 62.5; min(x, 100) sums to 525 -> gap 100 - 52.5 = 47.5
    a = _tasks("A")
    assert float(stats.iqm(a)) == 50.0 and float(stats.aggregate_mean(a)) == 62.5 and float(stats.aggregate_median(a)) == 62.5
    assert float(stats.optimality_gap(a, 100.0)) == 47.5
    for alg in TABLE:
        per_task = [TABLE[alg]["t1"], TABLE[alg]["t2"]]
        x = _tasks(alg)
        assert float(stats.iqm(x)) == pytest.approx(hand_iqm(per_task), abs=1e-12)
        assert float(stats.aggregate_mean(x)) == pytest.approx(hand_mean(per_task), abs=1e-12)
        assert float(stats.aggregate_median(x)) == pytest.approx(hand_median(per_task), abs=1e-12)
        assert float(stats.optimality_gap(x, 100.0)) == pytest.approx(hand_gap(per_task), abs=1e-12)
    # three tasks: the median is the middle task mean, not the mean of all
    three = [np.array([1.0, 3.0]), np.array([10.0]), np.array([100.0, 300.0, 200.0])]
    assert float(stats.aggregate_median(three)) == 10.0 and float(stats.aggregate_mean(three)) == pytest.approx((2 + 10 + 200) / 3)


@pytest.mark.parametrize("values, expected", [
    ([1.0, 2.0, 3.0, 4.0, 100.0], 3.0),          # 5 runs: floor(1.25) = 1 cut from each end, the middle 3
    ([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0], 4.5),  # 8 runs: 2 cut from each end, mean of 3 4 5 6
    ([1.0, 2.0, 30.0], 11.0),                    # 3 runs: floor(0.75) = 0, nothing cut
    ([5.0], 5.0),
])
def test_iqm_trims_as_scipy_trim_mean_does(values, expected):
    assert float(stats.iqm([np.array(values)])) == pytest.approx(expected)
    assert float(stats.trimmed_mean(np.array(values), 0.25)) == pytest.approx(expected)


def _loop_bootstrap(per_task, statistic, indices, reps, confidence=0.95):
    """The bootstrap written out: for each resample, each task's runs at that resample's indices."""
    values = []
    for r in range(reps):
        resample = [[task[i] for i in idx[r]] for task, idx in zip(per_task, indices)]
        values.append(statistic(resample))
    tail = 100 * (1 - confidence) / 2
    return np.percentile(values, [tail, 100 - tail])


@pytest.mark.parametrize("name, fast, hand", [
    ("iqm", stats.iqm, hand_iqm),
    ("mean", stats.aggregate_mean, hand_mean),
    ("median", stats.aggregate_median, hand_median),
    ("gap", lambda s: stats.optimality_gap(s, 100.0), hand_gap),
])
def test_vectorised_bootstrap_equals_the_loop_with_the_same_resamples(name, fast, hand):
    reps, seed = 600, 11
    for alg in TABLE:
        per_task = [TABLE[alg]["t1"], TABLE[alg]["t2"]]
        est = stats.stratified_bootstrap(_tasks(alg), fast, reps=reps, seed=seed)
        lo, hi = _loop_bootstrap(per_task, hand, stats.bootstrap_indices([5, 5], reps, seed), reps)
        assert float(est.lower) == pytest.approx(lo, abs=1e-9) and float(est.upper) == pytest.approx(hi, abs=1e-9), (name, alg)
        assert float(est.point) == pytest.approx(hand(per_task)) and est.lower <= est.point <= est.upper


def test_bootstrap_interval_agrees_with_an_independent_resampler_within_tolerance():
    """Python's own random generator, 20,000 resamples each: the bounds agree within 3 points (on an
    interval about 44 wide; their spread from seed to seed is under 1 point at this many resamples)."""
    per_task = [TABLE["A"]["t1"], TABLE["A"]["t2"]]
    rng, values = random.Random(7), []
    for _ in range(20_000):
        values.append(hand_iqm([rng.choices(task, k=len(task)) for task in per_task]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    est = stats.stratified_bootstrap(_tasks("A"), stats.iqm, reps=20_000, seed=0)
    assert abs(float(est.lower) - lo) < 3.0 and abs(float(est.upper) - hi) < 3.0, (est, lo, hi)
    assert 30 < lo < 45 and 70 < hi < 95  # (the interval itself: far from the point's 50 on both sides)


def test_bootstrap_is_stratified_seeded_and_exact_for_constant_scores():
    # task 2's runs are all above 500: a stratified resample always holds exactly its 3 runs
    low, high = np.array([0.1, 0.2, 0.3, 0.4, 0.5]), np.array([1000.0, 1001.0, 1002.0])
    est = stats.stratified_bootstrap([low, high], lambda s: (np.concatenate(s, axis=-1) > 500).sum(axis=-1), reps=300)
    assert (est.point, est.lower, est.upper) == (3, 3, 3)
    a = stats.stratified_bootstrap(_tasks("C"), stats.iqm, reps=400, seed=5)
    b = stats.stratified_bootstrap(_tasks("C"), stats.iqm, reps=400, seed=5)
    c = stats.stratified_bootstrap(_tasks("C"), stats.iqm, reps=400, seed=6)
    assert (a.lower, a.upper) == (b.lower, b.upper) and (a.lower, a.upper) != (c.lower, c.upper)
    flat = stats.stratified_bootstrap([np.full(5, 7.5)], stats.aggregate_mean)
    assert (float(flat.point), float(flat.lower), float(flat.upper)) == (7.5, 7.5, 7.5)
    idx = stats.bootstrap_indices([5, 3], reps=4000, seed=0)
    assert [i.shape for i in idx] == [(4000, 5), (4000, 3)] and idx[1].min() == 0 and idx[1].max() == 2
    counts = np.bincount(idx[0].ravel(), minlength=5) / idx[0].size  # each run drawn about a fifth of the time
    assert np.all(np.abs(counts - 0.2) < 0.01)


def test_performance_profile_values_by_hand():
    # task 1: 10 20 30 40 95; task 2 (3 runs): 50 55 200; 8 runs pooled
    scores = [np.array([10.0, 20.0, 30.0, 40.0, 95.0]), np.array([50.0, 55.0, 200.0])]
    taus = np.array([0.0, 10.0, 39.9, 40.0, 95.0, 199.0, 200.0])
    # above 0: all 8; above 10 (strictly): 7; above 39.9: 40 95 50 55 200 = 5; above 40: 4; above 95: 1; above 199: 1; above 200: 0
    assert stats.score_distribution(scores, taus).tolist() == [8 / 8, 7 / 8, 5 / 8, 4 / 8, 1 / 8, 1 / 8, 0.0]
    est = stats.stratified_bootstrap(scores, lambda s: stats.score_distribution(s, taus), reps=500, seed=1)
    assert est.point.shape == est.lower.shape == (7,) and np.all(est.lower <= est.point) and np.all(est.point <= est.upper)
    assert est.lower[0] == est.upper[0] == 1.0 and est.lower[-1] == est.upper[-1] == 0.0
    assert est.lower[2] < 5 / 8 < est.upper[2]


# ------------------------------------------------------------------------------------------------ the job


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real `train` runs of a few steps on the bandit with evaluations every 2 steps: eta=0.1 (seeds
    0-1), eta=10 (seeds 0-1), and eta=10 again on seed 2 alone (a single-seed run's metrics.csv names
    its columns without a seed suffix)."""
    from dqltoolkit.training import train

    root = tmp_path_factory.mktemp("runs")
    for name, eta, seeds in (("eta0.1", 0.1, [0, 1]), ("eta10", 10.0, [0, 1]), ("eta10-seed2", 10.0, [2])):
        train("diffusion-ql", "bandit2d-v0", root / name, steps=4, seeds=seeds, overrides={**TINY, "eta": eta, "eval_freq": 2},
              progress=False, verbose=False)
    return root


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _copy_runs(src, dst):
    for d in src.iterdir():
        shutil.copytree(d, dst / d.name, ignore=shutil.ignore_patterns("*.zip", "*.png", "*.npy", ".lock"))
    return dst


def test_report_writes_the_csv_tables_and_figures_of_real_runs(runs, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["report", str(runs), "--out", str(out), "--reps", "500"], catch_exceptions=False)
    assert res.exit_code == 0, res.output + res.stderr
    for name in ("evaluations.csv", "report.md", "performance_profile.png", "learning_curves.png"):
        assert f"wrote {out / name}" in res.stdout
    for png in ("performance_profile.png", "learning_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 10_000

    rows = _csv(out / "evaluations.csv")
    assert list(rows[0]) == ["run", "algorithm", "agent", "task", "seed", "step", "kind", "metric", "value"]
    # per seed: periodic returns at steps 2 and 4, the final return and best-mode share at step 4, and the evaluation the
    # offline BC-loss rule picks (dqltoolkit/selection.py: the runs log each seed's BC loss)
    keyed = {(r["run"], r["seed"], r["step"], r["kind"], r["metric"]): r for r in rows}
    assert len(rows) == len(keyed) == 5 * 5
    assert sum(r["kind"] == "offline" for r in rows) == 5
    assert {r["algorithm"] for r in rows} == {"diffusion-ql eta=0.1", "diffusion-ql eta=10"}
    assert {(r["run"], r["algorithm"]) for r in rows} == {("eta0.1", "diffusion-ql eta=0.1"), ("eta10", "diffusion-ql eta=10"),
                                                         ("eta10-seed2", "diffusion-ql eta=10")}
    assert sorted(k for k in keyed if k[0] == "eta10-seed2" and k[3] != "offline") == [("eta10-seed2", "2", "2", "periodic", "return"),
                                                                 ("eta10-seed2", "2", "4", "final", "best_mode_share"),
                                                                 ("eta10-seed2", "2", "4", "final", "return"),
                                                                 ("eta10-seed2", "2", "4", "periodic", "return")]
    finals = {}
    for name in ("eta0.1", "eta10", "eta10-seed2"):
        for e in json.loads((runs / name / "results.json").read_text())["evaluation"]:
            assert float(keyed[(name, str(e["seed"]), "4", "final", "return")]["value"]) == e["mean_return"]
            finals.setdefault("eta=0.1" if name == "eta0.1" else "eta=10", []).append(e["mean_return"])
    with open(runs / "eta10" / "metrics.csv", newline="") as f:
        logged = [r for r in csv.DictReader(f) if r.get("eval/mean_return_seed1")]
    assert [float(keyed[("eta10", "1", r["time/step"], "periodic", "return")]["value"]) for r in logged] == \
        [float(r["eval/mean_return_seed1"]) for r in logged]

    md = (out / "report.md").read_text()
    assert md.strip() in res.stdout  # (the report is printed too)
    assert "### bandit2d-v0" in md and "episode return (the task has no normalised score)" in md
    assert "online selection" in md and "optimistic" in md and "500 resamples" in md
    for alg, values in finals.items():
        (line,) = [ln for ln in md.split("`best_mode_share`")[0].splitlines() if ln.startswith(f"| diffusion-ql {alg} | {len(values)} |")]
        mean_cell = line.split("|")[3].strip()
        assert mean_cell.startswith(f"{np.mean(values):.3f} ["), (line, values)
        lo, hi = (float(v) for v in re.search(r"\[(.+), (.+)\]", mean_cell).groups())
        assert lo <= round(float(np.mean(values)), 3) + 1e-3 and hi >= round(float(np.mean(values)), 3) - 1e-3
    assert re.search(r"\| diffusion-ql eta=10 \| 1 of 1 \| 3 \| final \|", md) and "optimality gap" in md and "| n/a |" in md
    assert "| eta10-seed2 | diffusion-ql eta=10 | bandit2d-v0 | 2 | 4 |" in md and "## Skipped" not in md
    shares = [float(r["value"]) for r in rows if r["metric"] == "best_mode_share" and r["algorithm"] == "diffusion-ql eta=10"]
    assert len(shares) == 3 and f"| diffusion-ql eta=10 | 3 | {np.mean(shares):.3f} [" in md.split("`best_mode_share`")[1]


def test_algorithms_sort_by_the_numbers_in_their_names():
    from dqltoolkit.report import algorithm_order

    names = ["diffusion-ql eta=10", "bcq", "diffusion-ql eta=2.5", "diffusion-ql eta=0.1", "diffusion-ql eta=1e-3"]
    assert sorted(names, key=algorithm_order) == ["bcq", "diffusion-ql eta=1e-3", "diffusion-ql eta=0.1", "diffusion-ql eta=2.5",
                                                  "diffusion-ql eta=10"]


def test_report_figures_label_axes_and_name_every_algorithm(runs, tmp_path):
    from dqltoolkit.report import curve_data, profile_data, seed_scores, task_metric

    found, _ = gather([runs])
    curves = curve_data(found, reps=200, seed=0)
    fig = report_curves_figure(curves, {"bandit2d-v0": task_metric(found, "bandit2d-v0")})
    (ax,) = fig.axes
    assert ax.get_title() == "bandit2d-v0" and ax.get_xlabel() == "gradient step" and ax.get_ylabel() == "episode return (mean over seeds)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["diffusion-ql eta=0.1 (2 seeds)", "diffusion-ql eta=10 (3 seeds)"]
    assert [list(line.get_xdata()) for line in ax.lines] == [[2, 4], [2, 4]]
    assert len(ax.collections) == 2  # one band per algorithm
    steps, est, periodic, seeds = curves["bandit2d-v0"]["diffusion-ql eta=10"]
    assert seeds == 3
    one = {"bandit2d-v0": {"bc": Curve(np.array([4]), stats.Estimate(np.array([1.0]), np.array([1.0]), np.array([1.0])), False, 1)}}
    (ax,) = report_curves_figure(one, {"bandit2d-v0": "return"}).axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["bc (1 seed, end of run only)"]
    by_hand = [np.mean([float(r["value"]) for r in _csv_rows(found, "diffusion-ql eta=10", s)]) for s in (2, 4)]
    assert periodic and np.allclose(est.point, by_hand) and np.all(est.lower <= est.point) and np.all(est.point <= est.upper)

    scores = seed_scores(found)
    taus, profiles = profile_data(scores, ["bandit2d-v0"], reps=200, seed=0)
    fig = performance_profile_figure(taus, profiles, "return", ["bandit2d-v0"])
    (ax,) = fig.axes
    assert ax.get_ylabel() == "fraction of runs with score > τ" and ax.get_xlabel() == "episode return threshold τ (final score)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["diffusion-ql eta=0.1", "diffusion-ql eta=10"]
    final = scores["bandit2d-v0"]["diffusion-ql eta=10"].final
    assert len(final) == 3 and np.allclose(profiles["diffusion-ql eta=10"].point, [(final > t).mean() for t in taus])


def _csv_rows(found, algorithm, step):
    return [{"value": v} for r in found if r.algorithm == algorithm for (_, st, kind, m, v) in r.rows
            if st == step and kind == "periodic" and m == "return"]


def test_a_sweep_with_a_crashed_trial_is_reported_and_the_skip_listed(runs, tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "trials").mkdir(parents=True)
    trials = _copy_runs(runs, sweep / "trials")
    crashed = trials / "eta2.5"
    crashed.mkdir()
    shutil.copy(runs / "eta10" / "config.yaml", crashed / "config.yaml")
    shutil.copy(runs / "eta10" / "metrics.csv", crashed / "metrics.csv")
    (crashed / "model_latest.zip").write_bytes(b"")
    (sweep / "sweep.json").write_text("{}")
    res = CliRunner().invoke(main, ["report", str(sweep), "--reps", "200"], catch_exceptions=False)
    assert res.exit_code == 0, res.output + res.stderr
    why = f"{crashed.resolve() / 'results.json'}: missing, so the run did not finish (model_latest.zip is there)"
    assert f"warning: skipped {crashed.resolve()}: {why}" in res.stderr
    md = (sweep / "report" / "report.md").read_text()  # the default --out for one path
    assert f"- `{crashed.resolve()}`: {why}" in md.split("## Skipped\n\n")[1]
    # (a sweep.json without trials, as here, cannot say which trials failed: a note, and the folders are judged alone)
    book = (sweep / "sweep.json").resolve()
    assert f"- {book}: no field 'trials' (a mapping of trial names), so its trials' statuses are not used" in md.split("## Notes")[1]
    assert f"warning: {book}: no field 'trials'" in res.stderr
    assert {r["run"] for r in _csv(sweep / "report" / "evaluations.csv")} == {"eta0.1", "eta10", "eta10-seed2"}

    strict = CliRunner().invoke(main, ["report", str(sweep), "--out", str(tmp_path / "s"), "--strict"])
    assert strict.exit_code == 1 and "results.json: missing, so the run did not finish" in strict.stderr and "--strict" in strict.stderr


def _broken(runs, tmp_path, name, edit):
    dst = _copy_runs(runs, tmp_path / name)
    edit(dst / "eta10")
    return dst


@pytest.mark.parametrize("case, edit, message", [
    ("json", lambda d: (d / "results.json").write_text('{"total_steps": 4, "evaluation": ['),
     r"eta10/results\.json: not valid JSON \(Expecting value: line 1"),
    ("nan", lambda d: (d / "results.json").write_text(json.dumps({"total_steps": 4, "evaluation": [{"seed": 0, "mean_return": "NaN"},
                                                                                                     {"seed": 1, "mean_return": 1.0}]})),
     r"eta10/results\.json: field 'evaluation\[0\]\.mean_return' is 'NaN', not a finite number"),
    ("seed", lambda d: (d / "results.json").write_text(json.dumps({"total_steps": 4, "evaluation": [{"seed": 0, "mean_return": 1.0}]})),
     r"eta10/results\.json: field 'evaluation' has no entry for seed\(s\) \[1\] of config\.yaml's seeds \[0, 1\]"),
    ("csv", lambda d: (d / "metrics.csv").write_text("time/step,eval/mean_return_seed0\n2,oops\n"),
     r"eta10/metrics\.csv: line 2, column 'eval/mean_return_seed0' or 'time/step' is not a number \('oops', '2'\)"),
    ("config", lambda d: (d / "config.yaml").write_text(yaml.safe_dump({"agent": "diffusion-ql", "seeds": [0, 1], "config": {}})),
     r"eta10/config\.yaml: no field 'env'"),
])
def test_broken_run_folders_are_skipped_naming_file_and_field(runs, tmp_path, case, edit, message):
    root = _broken(runs, tmp_path, case, edit)
    said = []
    res = build_report([root], tmp_path / f"out-{case}", reps=100, say=said.append)
    assert [r.label for r in res.runs] == ["eta0.1", "eta10-seed2"]
    (skip,) = res.skipped
    assert skip[0] == (root / "eta10").resolve() and re.search(message, skip[1]), skip[1]
    assert len(said) == 1 and said[0].startswith(f"skipped {(root / 'eta10').resolve()}") and re.search(message, said[0])
    assert re.search(message, (tmp_path / f"out-{case}" / "report.md").read_text().replace("`", ""))
    with pytest.raises(ReportError, match=message):
        gather([root], strict=True)


def test_nothing_to_report_names_the_paths(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "config.yaml").write_text("env: bandit2d-v0\n")  # a config.yaml alone (a sweep's settings) is no run
    with pytest.raises(ReportError, match=rf"no run folders \(a folder with config\.yaml and results\.json and metrics\.csv.*\) under: {re.escape(str(empty))}"):
        find_run_dirs([empty])
    res = CliRunner().invoke(main, ["report", str(tmp_path / "nope"), str(empty)])
    assert res.exit_code == 1 and f"no such folder: {tmp_path / 'nope'}" in res.stderr
    only_bad = tmp_path / "bad" / "run"
    only_bad.mkdir(parents=True)
    (only_bad / "metrics.csv").write_text("time/step\n1\n")
    with pytest.raises(ReportError, match=r"every run folder was skipped:\n  .*bad/run: .*config\.yaml: missing"):
        gather([tmp_path / "bad"])
    with pytest.raises(Exception, match="config.yaml: missing"):
        load_run(only_bad)


def _write_run(path, agent, task, seeds, finals, periodic, normalised=True):
    """A run folder in `train`'s format (config.yaml, results.json, metrics.csv with SB3's sparse rows),
    with normalised scores ``finals`` at step 100 and ``periodic`` ones at step 50 (return = 10 x score + 3)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"agent": agent, "recipe_file": f"agents/{agent}.yaml", "env": task, "seeds": seeds,
                                                      "device": "cpu", "steps_this_run": 100, "config": {"eta": 1.0, "steps": 100}}))
    entry = (lambda s, v: {"seed": s, "mean_return": 10 * v + 3, **({"normalized_score": v} if normalised else {}), "episodes": 10})
    (path / "results.json").write_text(json.dumps({"total_steps": 100, "seeds": seeds, "evaluation": [entry(s, v) for s, v in zip(seeds, finals)]}))
    keys = ["mean_return"] + (["normalized_score"] if normalised else [])
    header = ["time/step", "train/critic_loss"] + [f"eval/{k}" for k in keys] + [f"eval/{k}_seed{s}" for k in keys for s in seeds]
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for step, values in ((50, periodic), (100, finals)):
            w.writerow([step, 0.5] + [""] * (len(header) - 2))
            ev = {"mean_return": [10 * v + 3 for v in values], "normalized_score": list(values)}
            w.writerow([step, ""] + [float(np.mean(ev[k])) for k in keys] + [ev[k][i] for k in keys for i in range(len(seeds))])


def _row_numbers(md, prefix):
    (line,) = [ln for ln in md.splitlines() if ln.startswith(prefix)]
    return [float(x) for x in re.findall(r"(-?\d+\.\d+) \[", line)]


def test_the_aggregate_over_normalised_tasks_matches_the_hand_table(tmp_path):
    """The fixed table as run folders on two D4RL-style tasks (normalised scores), plus a bandit run of A
    (returns only): the aggregate pools the two normalised tasks and says why the bandit is left out."""
    tasks = {"t1": "hopper-medium-v2", "t2": "walker2d-medium-v2"}
    for alg, per_task in TABLE.items():
        for t, task in tasks.items():
            finals = per_task[t]
            periodic = [99.0 if (alg, t) == ("A", "t1") and i == 0 else v - 5 for i, v in enumerate(finals)]
            _write_run(tmp_path / "runs" / f"{alg}-{t}", alg, task, [0, 1, 2, 3, 4], finals, periodic)
    _write_run(tmp_path / "runs" / "A-bandit", "A", "bandit2d-v0", [0, 1], [1.0, 2.0], [0.5, 0.5], normalised=False)
    res = build_report([tmp_path / "runs"], tmp_path / "out", reps=300, seed=0)
    md = res.markdown
    assert "Pooled: hopper-medium-v2, walker2d-medium-v2; score: normalised score" in md
    assert "tasks without a normalised score are not pooled (their returns have no common scale): bandit2d-v0" in md
    for alg in TABLE:
        per_task = [TABLE[alg]["t1"], TABLE[alg]["t2"]]
        numbers = _row_numbers(md, f"| {alg} | 2 of 2 | 10 | final |")
        assert numbers == pytest.approx([hand_iqm(per_task), hand_mean(per_task), hand_median(per_task), hand_gap(per_task)], abs=0.005)
    assert _row_numbers(md, "| A | 2 of 2 | 10 | final |") == [50.0, 62.5, 62.5, 47.5]
    # best*: seed 0 of A on t1 evaluated 99 at step 50 and 10 at the end; every other seed's best is its final
    hopper = md.split("### hopper-medium-v2")[1].split("###")[0]
    final_mean, final_iqm, best_mean, best_iqm = _row_numbers(hopper, "| A | 5 |")
    assert (final_mean, final_iqm, best_mean) == (39.0, 30.0, pytest.approx((99 + 20 + 30 + 40 + 95) / 5))
    assert best_iqm == pytest.approx((30 + 40 + 95) / 3)
    assert "### bandit2d-v0" in md and "| A | 2 | 18.00 [" in md.split("### bandit2d-v0")[1]  # returns 13, 23
    rows = _csv(tmp_path / "out" / "evaluations.csv")
    # per seed: periodic at steps 50 and 100 and final at 100, each a return and a normalised score; the bandit: returns only
    assert len(rows) == 6 * 5 * 3 * 2 + 2 * 3 * 1
    assert {r["metric"] for r in rows if r["task"] == "hopper-medium-v2"} == {"return", "normalized_score"}


# ------------------------------------------------------------------------------------------------ sweep folders


def _stop_early(run, step, budget):
    """Make ``run`` what a trial that ASHA stopped at ``step`` leaves (dqltoolkit/sweep.py SweepBook.stopped_early):
    metrics.csv ends at the stop, results.json has the evaluations so far and no end-of-run ``evaluation``."""
    with open(run / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, kept = reader.fieldnames, [r for r in reader if int(float(r["time/step"])) <= step]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(kept)
    seeds = yaml.safe_load((run / "config.yaml").read_text())["seeds"]
    evaluations = [{"step": int(float(r["time/step"])), "mean_return": float(r["eval/mean_return"]),
                    "mean_return_per_seed": [float(r[f"eval/mean_return_seed{s}"]) for s in seeds]} for r in kept if r.get("eval/mean_return")]
    (run / "results.json").write_text(json.dumps({"stopped_early": True, "stopped_by": "asha", "steps": step, "first_step": 0, "total_steps": step,
                                                  "budget": budget, "seeds": seeds, "evaluations": evaluations,
                                                  "mean_return": evaluations[-1]["mean_return"]}, indent=2))
    for p in run.glob("model*.zip"):
        p.unlink()
    return evaluations[-1]


def _sweep_folder(runs, root):
    """A sweep folder as `dqltoolkit sweep` leaves it, its sweep.json written by the sweep's own book: eta=10
    finished, eta=0.1 stopped early by ASHA at step 2 of 4, eta=2.5 failed (its folder unfinished), eta=25
    interrupted before it wrote anything; and Tune's records under tune/ (a decoy run folder there)."""
    from dqltoolkit.sweep import SweepBook
    from dqltoolkit.sweep_spec import load_sweep

    root.mkdir(parents=True)
    spec_file = root / "s.yaml"
    spec_file.write_text(yaml.safe_dump({"agents": "diffusion-ql", "tasks": "bandit2d-v0", "seeds": "0-1", "steps": 4, "eval_freq": 2,
                                         "params": TINY, "grid": {"eta": [0.1, 2.5, 10.0, 25.0]}}))
    spec = load_sweep(spec_file)
    book = SweepBook(root, spec)
    names = {eta: f"diffusion-ql_bandit2d-v0_eta={eta:g}" for eta in (0.1, 2.5, 10.0, 25.0)}
    for eta, name in names.items():
        book.started(name, {"agent": "diffusion-ql", "task": "bandit2d-v0", "params": {"eta": eta}})
    trials = root / "trials"
    shutil.copytree(runs / "eta10", trials / names[10.0])
    book.completed(names[10.0], {"final": True, "step": 4, "mean_return": 1.0})
    shutil.copytree(runs / "eta0.1", trials / names[0.1])
    last = _stop_early(trials / names[0.1], step=2, budget=4)
    book.entry(names[0.1])["status"] = "stopped_early"
    (trials / names[2.5]).mkdir()
    for f in ("config.yaml", "metrics.csv"):
        shutil.copy(runs / "eta10" / f, trials / names[2.5] / f)
    (root / "error.txt").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    book.failed(names[2.5], str(root / "error.txt"))
    book.completed(names[25.0], {})  # (no final result: interrupted)
    decoy = root / "tune" / "attempt-1" / names[10.0]
    shutil.copytree(runs / "eta10", decoy, ignore=shutil.ignore_patterns("*.zip"))
    return names, last


def test_a_sweep_folder_reports_stopped_early_trials_apart_and_skips_failed_ones(runs, tmp_path):
    nest = tmp_path / "all" / "sweeps"
    names, last = _sweep_folder(runs, nest / "s1")
    statuses = {e["status"] for e in json.loads((nest / "s1" / "sweep.json").read_text())["trials"].values()}
    assert statuses == {"finished", "stopped_early", "error", "interrupted"}
    said = []
    res = build_report([tmp_path / "all"], tmp_path / "out", reps=200, say=said.append)  # found wherever the sweep sits
    md = res.markdown
    assert sorted(r.label for r in res.runs) == [names[0.1], names[10.0]], "tune/ is not searched"
    assert {r.algorithm for r in res.runs} == {"diffusion-ql eta=0.1", "diffusion-ql eta=10"}

    # the stopped trial: no final score, its best* of the evaluations before the stop, marked
    best = np.array(last["mean_return_per_seed"])
    (row,) = [ln for ln in md.split("### bandit2d-v0")[1].split("\n\n")[2].splitlines() if ln.startswith("| diffusion-ql eta=0.1 |")]
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[:3] == ["0 + 2†", "—", "—"] and cells[3].startswith(f"{best.mean():.3f} [") and cells[3].endswith("]†")
    assert re.search(r"\| diffusion-ql eta=10 \| 2 \| \d", md)
    assert "† seeds of trials stopped early (ASHA) before their step budget: no final score" in md
    assert (f"- stopped early by ASHA: diffusion-ql eta=0.1 on bandit2d-v0 ({names[0.1]}) at step 2 of its 4; last evaluation "
            f"(step 2): return {last['mean_return']:.3f} (mean of 2 seed(s)). Not in the final statistics") in md
    assert f"| {names[0.1]} | diffusion-ql eta=0.1 | bandit2d-v0 | 0, 1 | 2† of 4 (stopped early by asha) |" in md
    assert f"| {names[10.0]} | diffusion-ql eta=10 | bandit2d-v0 | 0, 1 | 4 |" in md
    (agg,) = [ln for ln in md.splitlines() if ln.startswith("| diffusion-ql eta=0.1 | 1 of 1 | 0 | final |")]
    assert agg.count("—") == 3
    assert "`best_mode_share`" in md and "| diffusion-ql eta=0.1 | 0 |" not in md  # (only finished trials have one)

    # failed and interrupted trials: skipped with their status
    book = (nest / "s1" / "sweep.json").resolve()
    skipped = {Path(d).name: why for d, why in res.skipped}
    assert skipped == {names[2.5]: f"{book}: trial '{names[2.5]}' has status 'error' (the trial failed: RuntimeError: boom)",
                       names[25.0]: f"{book}: trial '{names[25.0]}' has status 'interrupted' (the sweep stopped before the trial ended "
                                    "(`dqltoolkit sweep --resume` runs it again)); no run folder"}
    assert len(said) == 2 and f"- `{(nest / 's1' / 'trials' / names[2.5]).resolve()}`: {skipped[names[2.5]]}" in md

    rows = _csv(tmp_path / "out" / "evaluations.csv")
    stopped_rows = [r for r in rows if r["run"] == names[0.1]]
    assert {r["kind"] for r in stopped_rows} == {"periodic"} and {r["step"] for r in stopped_rows} == {"2"}
    from dqltoolkit.report import curve_data, profile_data, seed_scores

    curves = curve_data(res.runs, reps=100, seed=0)["bandit2d-v0"]
    assert list(curves["diffusion-ql eta=0.1"][0]) == [2] and list(curves["diffusion-ql eta=10"][0]) == [2, 4]
    _, profiles = profile_data(seed_scores(res.runs), ["bandit2d-v0"], reps=100, seed=0)
    assert list(profiles) == ["diffusion-ql eta=10"], "the profile is of final scores"
    with pytest.raises(ReportError, match="has status 'error'"):
        gather([tmp_path / "all"], strict=True)


def test_one_sweep_trial_is_named_by_the_keys_its_sweep_varied(runs, tmp_path):
    """A trial folder named alone has no other run to differ from: the book (two folders up) names its swept keys."""
    names, _ = _sweep_folder(runs, tmp_path / "s")
    found, skipped = gather([tmp_path / "s" / "trials" / names[10.0]])
    assert [r.algorithm for r in found] == ["diffusion-ql eta=10"] and skipped == []
    plain = _copy_runs(runs, tmp_path / "plain")
    assert {r.algorithm for r in gather([plain / "eta10"])[0]} == {"diffusion-ql"}  # (no book: nothing to say it was swept)


def test_an_unreadable_sweep_json_is_listed_and_its_trials_still_reported(runs, tmp_path):
    names, _ = _sweep_folder(runs, tmp_path / "s")
    (tmp_path / "s" / "sweep.json").write_text('{"trials": ')
    notes = []
    found, skipped = gather([tmp_path / "s"], notes=notes)
    assert sorted(r.label for r in found) == [names[0.1], names[10.0]]
    (note,) = notes
    assert note.startswith(f"{(tmp_path / 's' / 'sweep.json').resolve()}: not readable JSON (") and "statuses are not used" in note
    assert [(Path(d).name, why.split(": ")[1]) for d, why in skipped] == [(names[2.5], "missing, so the run did not finish")]
    with pytest.raises(ReportError, match="results.json: missing"):  # (--strict: a run left out is an error; a note is not)
        gather([tmp_path / "s"], strict=True)


def test_a_stopped_trial_does_not_turn_a_normalised_task_into_returns():
    """A D4RL task keeps its normalised score when one of its runs was stopped early (no end-of-run rows), and
    a run stopped before its first evaluation is left out rather than crashing the best* column."""
    from dqltoolkit.report import Run, seed_scores, task_metric

    def rows(seed, kinds, base):
        return [(seed, step, kind, m, base + step / 1000 + (100 if m == "return" else 0))
                for step, kind in kinds for m in ("return", "normalized_score")]

    done = Run(Path("a"), "td3bc", "hopper-medium-v2", {}, [0, 1], 3000, rows(0, [(1000, "periodic"), (3000, "final")], 40)
               + rows(1, [(1000, "periodic"), (3000, "final")], 50), label="a", algorithm="td3bc eta=1")
    stopped = Run(Path("b"), "td3bc", "hopper-medium-v2", {}, [0], 3000, rows(0, [(1000, "periodic")], 10), label="b",
                  algorithm="td3bc eta=5", stopped_by="asha", budget=3000)
    early = Run(Path("c"), "td3bc", "hopper-medium-v2", {}, [0], 3000, [], label="c", algorithm="td3bc eta=9", stopped_by="asha", budget=3000)
    runs = [done, stopped, early]
    assert task_metric(runs, "hopper-medium-v2") == "normalized_score"
    scores = seed_scores(runs)["hopper-medium-v2"]
    assert scores["td3bc eta=1"].final.tolist() == [43.0, 53.0] and scores["td3bc eta=1"].best.tolist() == [43.0, 53.0]
    assert scores["td3bc eta=5"].final.size == 0 and scores["td3bc eta=5"].best.tolist() == [11.0] and scores["td3bc eta=5"].stopped == 1
    assert scores["td3bc eta=9"].best.size == 0
    assert task_metric([stopped], "hopper-medium-v2") == "normalized_score"  # all stopped: their evaluations decide
