"""`dqltoolkit sweep` on Ray Tune: sweep files checked up front, a two-node Ray cluster on 127.0.0.1, the
embedded Ray, an interrupted sweep resumed, and ASHA stopping a clearly worse trial.

The Ray tests (marker ``ray``) start real Ray processes (each start costs seconds) and train tiny bandit
trials. Measured on 2 cores with another job on one of them: the embedded sweep 23 s, the two-node
cluster 5 s to start and 19 s to run, the interrupted and resumed sweep 42 s (these run by default);
ASHA 28 s, Optuna 37 s and the lost worker node 51 s are marked slow. Nothing leaves 127.0.0.1, and every Ray this file starts is
stopped by a finalizer or by the command that started it."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dqltoolkit.cli import main
from dqltoolkit.sweep_spec import SweepError, load_sweep

ROOT = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra: pip install 'dqltoolkit[ray]'")
TINY = {"T": 3, "hidden": 16, "critic_hidden": 16, "time_dim": 8, "batch_size": 32, "n_candidates": 4, "log_every": 10}
# big enough that 3 seeds find a mode of the bandit within 50 steps (mean return > 1.6 at every evaluation, measured),
# while lr = 0 leaves the policy where it started (0.017 at every evaluation)
LEARNS = {"T": 10, "hidden": 64, "critic_hidden": 64, "log_every": 50}


def write_sweep(path: Path, **fields) -> Path:
    doc = {"agents": "diffusion-ql", "tasks": "bandit2d-v0", "seeds": "0-1", "steps": 40, "eval_freq": 10, "params": dict(TINY),
           "grid": {"eta": [0.1, 10.0]}}
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not None}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_error(tmp_path, **fields) -> str:
    with pytest.raises(SweepError) as info:
        load_sweep(write_sweep(tmp_path / "bad.yaml", **fields))
    return str(info.value)


# --- sweep files, checked before anything starts --------------------------------------------------------------


def test_a_good_sweep_file_expands_to_its_grid(tmp_path):
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", grid={"eta": [0.1, 10.0], "lr": [1e-3, 3e-4]}))
    trials = spec.grid_trials()
    assert [t.params for t in trials] == [{"eta": 0.1, "lr": 1e-3}, {"eta": 0.1, "lr": 3e-4}, {"eta": 10.0, "lr": 1e-3}, {"eta": 10.0, "lr": 3e-4}]
    assert trials[0].name == "diffusion-ql_bandit2d-v0_eta=0.1_lr=0.001"
    assert spec.seeds == [0, 1] and spec.metric == "mean_return"  # the bandit has no reference scores
    assert spec.budget("diffusion-ql", "bandit2d-v0") == 40


@pytest.mark.parametrize("fields, expected", [
    ({"gird": {"eta": [1.0]}}, "unknown field(s) ['gird']"),
    ({"steps": "many"}, "field 'steps': expected an integer, got str 'many'"),
    ({"seeds": [0, "one"]}, "field 'seeds'"),
    ({"agents": []}, "field 'agents': expected a name or a non-empty list"),
    ({"grid": {"eta": 1.0}}, "field 'grid': eta: expected a non-empty list of values"),
    ({"grid": {"etta": [1.0]}}, "unknown key 'etta'"),
    ({"grid": {"perturbation": [0.05]}}, "field 'grid': perturbation=0.05 for agent diffusion-ql on bandit2d-v0"),
    ({"params": {**TINY, "hidden": -3}}, "hidden"),
    ({"grid": {"eta": [-1.0]}}, "eta"),
    ({"space": {"lr": {"loguniform": [0, 1e-3]}}, "grid": None}, "loguniform needs 0 < low"),
    ({"space": {"lr": {"normal": [0, 1]}}, "grid": None}, "field 'space': lr: expected one of"),
    ({"search": "optuna", "space": {"lr": {"uniform": [1e-4, 1e-3]}}}, "optuna tunes one agent on one task over a space (no grid)"),
    ({"search": "bayes"}, "field 'search': expected one of grid, random, optuna"),
    ({"num_samples": 3}, "a grid runs each point once"),
    ({"metric": "normalized_score"}, "normalized_score needs reference scores"),
    ({"scheduler": {"type": "asha", "grace_period": 40}}, "ASHA could never stop a trial early"),
    ({"scheduler": {"type": "hyperband"}}, "field 'scheduler.type': the one scheduler is 'asha'"),
    ({"scheduler": {"type": "asha", "grace": 10}}, "field 'scheduler': unknown field(s) ['grace']"),
    ({"resources_per_trial": {"cpu": 0.5}}, "field 'resources_per_trial.cpu': a whole number of CPUs"),
    ({"eval_freq": 80}, "a trial would report nothing before its end"),
    ({"tasks": ["bandit3d-v0"]}, "field 'tasks': unknown env 'bandit3d-v0'"),
    ({"agents": ["diffusion-qll"]}, "field 'agents': diffusion-qll"),
    ({"params": {"steps": 10}}, "set it with the sweep's own field 'steps'"),
    ({"grid": {"eta": [1.0, 2.5, 1]}}, "field 'grid': two trials are the same point (diffusion-ql on bandit2d-v0 with {'eta': 1.0}), "
                                       "so they would train into one folder trials/diffusion-ql_bandit2d-v0_eta=1"),
])
def test_a_bad_sweep_file_names_the_file_and_the_field(tmp_path, fields, expected):
    message = sweep_error(tmp_path, **fields)
    assert str(tmp_path / "bad.yaml") in message
    assert expected in message


def test_the_cli_reports_a_bad_sweep_file_without_starting_ray(tmp_path):
    res = CliRunner().invoke(main, ["sweep", str(write_sweep(tmp_path / "bad.yaml", grid={"etta": [1.0]})), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "unknown key 'etta'" in res.output and "bad.yaml" in res.output
    assert not (tmp_path / "o").exists()


def test_the_shipped_sweep_files_are_valid():
    names = sorted(p.name for p in (ROOT / "sweeps").glob("*.yaml"))
    assert names == ["bandit-eta.yaml", "d4rl-locomotion.yaml", "hopper-td3bc-eta.yaml", "paper-eta-gradnorm.yaml", "results-hopper.yaml"]
    results = load_sweep(ROOT / "sweeps" / "results-hopper.yaml")
    assert [(t.agent, t.task) for t in results.grid_trials()][:2] == [("diffusion-ql", "hopper-medium-v2"), ("diffusion-ql", "hopper-medium-replay-v2")]
    assert results.seeds == [0, 1, 2] and results.budget("td3bc", "hopper-medium-v2") == 200_000 and results.checkpoint_every() == 10_000
    bandit = load_sweep(ROOT / "sweeps" / "bandit-eta.yaml")
    assert len(bandit.grid_trials()) == len(bandit.grid["eta"]) and bandit.seeds == [0, 1, 2, 3, 4]
    d4rl = load_sweep(ROOT / "sweeps" / "d4rl-locomotion.yaml")
    assert len(d4rl.grid_trials()) == 9 * 5 and d4rl.seeds == [0, 1, 2, 3, 4] and d4rl.metric == "normalized_score"
    paper = load_sweep(ROOT / "sweeps" / "paper-eta-gradnorm.yaml")
    assert paper.agents == ["diffusion-ql"] and set(paper.grid) == {"eta", "grad_norm"}
    hopper = load_sweep(ROOT / "sweeps" / "hopper-td3bc-eta.yaml")
    assert [t.params for t in hopper.grid_trials()] == [{"eta": 1.0}, {"eta": 2.5}, {"eta": 5.0}] and hopper.seeds == [0, 1, 2]
    assert hopper.budget("td3bc", "hopper-medium-v2") == 3000 and hopper.metric == "normalized_score"


@needs_ray
def test_a_random_search_draws_the_same_trials_on_every_run(tmp_path):
    from dqltoolkit.sweep import planned_trials

    space = {"lr": {"loguniform": [1e-4, 1e-2]}, "policy_delay": {"randint": [1, 4]}, "grad_norm": {"choice": [1.0, 4.0]}}
    spec = load_sweep(write_sweep(tmp_path / "r.yaml", search="random", num_samples=3, space=space))
    trials = planned_trials(spec)
    assert len(trials) == 2 * 3 and [t.params["eta"] for t in trials] == [0.1] * 3 + [10.0] * 3  # 3 draws per grid point
    for t in trials:
        assert 1e-4 <= t.params["lr"] < 1e-2 and isinstance(t.params["lr"], float)
        assert 1 <= t.params["policy_delay"] < 4 and isinstance(t.params["policy_delay"], int)
        assert t.params["grad_norm"] in (1.0, 4.0)
    assert len({t.name for t in trials}) == 6 and all(len(t.name.rsplit("_", 1)[1]) == 8 for t in trials)  # hashed names
    assert [t.params for t in planned_trials(load_sweep(tmp_path / "r.yaml"))] == [t.params for t in trials]
    other = planned_trials(load_sweep(write_sweep(tmp_path / "r2.yaml", search="random", num_samples=3, space=space, search_seed=1)))
    assert [t.params for t in other] != [t.params for t in trials]


def test_values_that_print_alike_get_distinct_trial_folders(tmp_path):
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", grid={"lr": [3e-4, 3.0002e-4, 1e-3]}))
    names = [t.name for t in spec.grid_trials()]
    assert names[2] == "diffusion-ql_bandit2d-v0_lr=0.001"  # (a name printed once stays as it was)
    assert len(set(names)) == 3 and all(n.startswith("diffusion-ql_bandit2d-v0_lr=0.0003_") and len(n.rsplit("_", 1)[1]) == 8 for n in names[:2])
    assert [t.name for t in load_sweep(tmp_path / "s.yaml").grid_trials()] == names  # (the same on every run: --resume finds them)


def _recipe(path: Path, **bandit) -> str:
    doc = yaml.safe_load((ROOT / "agents" / "diffusion-ql.yaml").read_text())
    doc["bandit2d-v0"].update(bandit)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_recipe_files_of_one_stem_get_distinct_trial_folders(tmp_path):
    agents = [_recipe(tmp_path / "a" / "x.yaml"), _recipe(tmp_path / "b" / "x.yaml")]
    names = [t.name for t in load_sweep(write_sweep(tmp_path / "s.yaml", agents=agents, grid={"eta": [0.1]})).grid_trials()]
    assert len(set(names)) == 2 and all(n.startswith("x_bandit2d-v0_eta=0.1_") for n in names)


def test_asha_grace_defaults_to_the_smallest_eval_freq_of_the_recipes(tmp_path):
    agents = [_recipe(tmp_path / "every20.yaml", eval_freq=20), _recipe(tmp_path / "every10.yaml", eval_freq=10)]
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", agents=agents, eval_freq=None, scheduler="asha"))
    assert spec.eval_freq is None and sorted(spec.eval_freqs.values()) == [10, 20]
    assert spec.grace_period() == 10  # (what sweep.py gives ASHA; it was 1 step before)
    given = load_sweep(write_sweep(tmp_path / "g.yaml", agents=agents, eval_freq=None, scheduler={"type": "asha", "grace_period": 30}))
    assert given.grace_period() == 30
    assert load_sweep(write_sweep(tmp_path / "n.yaml", agents=agents, eval_freq=None)).grace_period() is None
    late = [_recipe(tmp_path / "every40.yaml", eval_freq=40)]
    with pytest.raises(SweepError) as info:
        load_sweep(write_sweep(tmp_path / "late.yaml", agents=late, eval_freq=None, scheduler="asha"))
    assert (f"{tmp_path / 'late.yaml'}: field 'scheduler.grace_period': 40 steps (the smallest eval_freq in force, as none is given) "
            "is not below the run's 40") in str(info.value)


@pytest.mark.parametrize("damage", [{"seeds": ["a"]}, {"total_steps": None}, {"seeds": "01"}, {"seeds": [True, 1]},
                                    {"stopped_early": True, "total_steps": None}, {"total_steps": "40"}])
def test_a_damaged_results_json_counts_as_not_complete_on_resume(tmp_path, damage):
    from dqltoolkit.sweep import SweepBook, _todo
    from dqltoolkit.sweep_spec import complete_results

    spec = load_sweep(write_sweep(tmp_path / "s.yaml"))
    out = tmp_path / "out"
    good, bad = out / "trials" / NAMES[0], out / "trials" / NAMES[1]
    for run in (good, bad):
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"seeds": [0, 1], "total_steps": 40, **(damage if run is bad else {})}))
    assert complete_results(good, 40, [0, 1]) == {"seeds": [0, 1], "total_steps": 40}
    assert complete_results(bad, 40, [0, 1]) is None
    todo, skipped = _todo(spec, SweepBook(out, spec), out)
    assert skipped == [NAMES[0]] and [t.name for t in todo] == [NAMES[1]]


def test_a_second_sweep_into_a_locked_folder_is_refused(tmp_path):
    from dqltoolkit.faults import RunLock
    from dqltoolkit.sweep import run_sweep

    spec = load_sweep(write_sweep(tmp_path / "s.yaml"))
    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out):  # as a running sweep holds it
        with pytest.raises(SweepError) as info:
            run_sweep(spec, out)
        refused = CliRunner().invoke(main, ["sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--resume"])
    assert str(info.value).startswith(f"another sweep is running in {out} (process {os.getpid()} holds {out / '.lock'})")
    assert refused.exit_code == 1 and f"another sweep is running in {out}" in refused.output
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


def test_resuming_a_folder_that_does_not_exist_makes_nothing(tmp_path):
    from dqltoolkit.sweep import run_sweep

    with pytest.raises(SweepError, match="holds no sweep.json"):
        run_sweep(load_sweep(write_sweep(tmp_path / "s.yaml")), tmp_path / "none", resume=True)
    assert not (tmp_path / "none").exists()


@needs_ray
def test_a_random_search_that_draws_a_point_twice_is_refused(tmp_path):
    from dqltoolkit.sweep import planned_trials

    spec = load_sweep(write_sweep(tmp_path / "r.yaml", search="random", num_samples=3, space={"grad_norm": {"choice": [1.0, 4.0]}}))
    with pytest.raises(SweepError) as info:
        planned_trials(spec)  # 3 draws of 2 choices
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'r.yaml'}: field 'space': two trials are the same point") and "search: random drew one point" in message


@needs_ray
@pytest.mark.parametrize("ray_handler", [False, True], ids=["ours", "ray.init's"])
def test_sigterm_while_ray_starts_interrupts_the_sweep(tmp_path, monkeypatch, ray_handler):
    """A SIGTERM before Tune takes over (here: while Ray starts; ray.init first puts its own handler in place,
    sys.exit(SIGTERM)) stops the sweep as Ctrl-C does, with sweep.json marking the trials interrupted and the
    process's own SIGTERM handler put back."""
    import dqltoolkit.sweep as sweep_module

    def start_ray_and_get_sigterm(address, cpus, say):
        if ray_handler:
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        raise AssertionError("SIGTERM did not stop the sweep")

    monkeypatch.setattr(sweep_module, "_start_ray", start_ray_and_get_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        sweep_module.run_sweep(load_sweep(write_sweep(tmp_path / "s.yaml")), out)
    assert time.perf_counter() - t0 < 5 and signal.getsignal(signal.SIGTERM) is before
    doc = json.loads((out / "sweep.json").read_text())
    assert sorted(doc["trials"]) == NAMES and [e["status"] for e in doc["trials"].values()] == ["interrupted"] * 2


def test_a_shipped_sweep_loads_by_name():
    assert load_sweep("bandit-eta").path.name == "bandit-eta.yaml"


# --- Ray ------------------------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


# Ray resolves 127.0.0.1 in an address to the machine's outward IP (so that other machines could use it),
# where nodes bound to 127.0.0.1 do not listen; this switch keeps the driver on the loopback interface too
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def run_cli(args, timeout=180, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dqltoolkit.cli", *args], env={**_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def evaluations(run_dir: Path) -> list:
    return [(e["step"], round(e["mean_return"], 6)) for e in json.loads((run_dir / "results.json").read_text())["evaluations"]]


def check_finished(out: Path, names) -> dict:
    """Every trial finished, with a standard run folder, and sweep.json says so."""
    doc = json.loads((out / "sweep.json").read_text())
    assert sorted(doc["trials"]) == sorted(names)
    for name, e in doc["trials"].items():
        run = out / e["run_dir"]
        assert e["status"] == "finished", (name, e)
        assert {"config.yaml", "metrics.csv", "results.json", "model_seed0.zip", "model_seed1.zip"} <= {p.name for p in run.iterdir()}
        results = json.loads((run / "results.json").read_text())
        assert results["total_steps"] == 40 and results["seeds"] == [0, 1]
        assert [s for s, _ in evaluations(run)] == [10, 20, 30, 40]
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["config"]["eta"] == e["params"]["eta"] and config["seeds"] == [0, 1]
    return doc


NAMES = ["diffusion-ql_bandit2d-v0_eta=0.1", "diffusion-ql_bandit2d-v0_eta=10"]


@pytest.fixture(scope="module")
def embedded_sweep(tmp_path_factory):
    """The tiny sweep on the Ray that `dqltoolkit sweep` starts by itself (no address)."""
    tmp = tmp_path_factory.mktemp("embedded")
    t0 = time.perf_counter()
    res = run_cli(["sweep", str(write_sweep(tmp / "tiny.yaml")), "--out", str(tmp / "out"), "--num-cpus", "2"])
    assert res.returncode == 0, res.stdout + res.stderr
    return tmp / "out", res, time.perf_counter() - t0


@pytest.mark.ray
@needs_ray
def test_the_embedded_ray_runs_a_sweep_and_shuts_down(embedded_sweep):
    out, res, wall = embedded_sweep
    doc = check_finished(out, NAMES)
    assert "started Ray in this process" in res.stderr and "2 finished, 0 stopped early, 0 failed, 0 interrupted" in res.stdout
    assert doc["attempts"][0]["address"] is None and doc["metric"] == "mean_return"
    assert wall < 120, f"the embedded tiny sweep took {wall:.0f}s"


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A head and a worker node (two raylets, one CPU each) on 127.0.0.1, stopped when the test ends."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # (the nodes' trial processes import this checkout)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.ray
@needs_ray
def test_a_sweep_runs_on_a_two_node_cluster_and_matches_the_embedded_run(tmp_path, two_node_cluster, embedded_sweep):
    res = run_cli(["sweep", str(write_sweep(tmp_path / "tiny.yaml")), "--out", str(tmp_path / "out"), "--address", two_node_cluster.address],
                  env=LOOPBACK)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "joined the Ray cluster" in res.stderr and "2 node(s), 2 CPU" in res.stderr
    doc = check_finished(tmp_path / "out", NAMES)
    assert len({e["node"] for e in doc["trials"].values()}) == 2, "one trial per node: each node has one CPU"
    embedded = embedded_sweep[0]
    for name in NAMES:  # the same training wherever it ran
        assert evaluations(tmp_path / "out" / "trials" / name) == evaluations(embedded / "trials" / name)


@pytest.mark.ray
@needs_ray
def test_an_interrupted_sweep_resumes_and_skips_finished_trials(tmp_path):
    sweep = write_sweep(tmp_path / "three.yaml", grid={"eta": [0.1, 1.0, 10.0]}, steps=100, eval_freq=50, max_concurrent_trials=1)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "dqltoolkit.cli", "sweep", str(sweep), "--out", str(out), "--num-cpus", "1"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "trials" / "diffusion-ql_bandit2d-v0_eta=0.1"
    try:
        deadline = time.time() + 150
        while time.time() < deadline:  # stop the driver once the first trial has finished and the second has started
            doc = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").exists() else {"trials": {}}
            states = [e["status"] for e in doc["trials"].values()]
            if states.count("finished") == 1 and "running" in states:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the first trial did not finish in time")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "continue with: dqltoolkit sweep" in stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert sorted(e["status"] for e in doc["trials"].values()) == ["finished", "interrupted", "interrupted"]
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    res = run_cli(["sweep", str(sweep), "--out", str(out), "--resume", "--num-cpus", "1"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 trial(s) done already, skipped: diffusion-ql_bandit2d-v0_eta=0.1" in res.stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert [e["status"] for e in doc["trials"].values()] == ["finished"] * 3
    assert doc["attempts"][1]["skipped"] == ["diffusion-ql_bandit2d-v0_eta=0.1"]
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == before, "a finished trial was not touched"
    for name in ("diffusion-ql_bandit2d-v0_eta=1", "diffusion-ql_bandit2d-v0_eta=10"):
        assert [s for s, _ in evaluations(out / "trials" / name)] == [50, 100]
    again = CliRunner().invoke(main, ["sweep", str(sweep), "--out", str(out), "--resume"])
    assert again.exit_code == 0 and "every trial is done" in again.output and "started Ray" not in again.output
    refused = CliRunner().invoke(main, ["sweep", str(sweep), "--out", str(out)])
    assert refused.exit_code == 1 and "holds a sweep already" in refused.output
    changed = CliRunner().invoke(main, ["sweep", str(write_sweep(tmp_path / "three.yaml", steps=60)), "--out", str(out), "--resume"])
    assert changed.exit_code == 1 and "differs from the sweep that" in changed.output


@pytest.mark.ray
@pytest.mark.slow
@needs_ray
def test_a_trial_killed_mid_way_continues_from_its_save_on_resume(tmp_path):
    """SIGKILL of the whole sweep (driver, Ray and the trial's worker) once the trial has saved: --resume goes on
    from model_latest.zip, not from step 0, and ends where the uninterrupted trial ends."""
    sweep = write_sweep(tmp_path / "one.yaml", grid={"eta": [1.0]}, steps=4000, eval_freq=500)
    out = tmp_path / "out"
    run = out / "trials" / "diffusion-ql_bandit2d-v0_eta=1"
    proc = subprocess.Popen([sys.executable, "-m", "dqltoolkit.cli", "sweep", str(sweep), "--out", str(out), "--num-cpus", "1"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 150
        while not (run / "model_latest.zip").exists():
            assert time.time() < deadline and proc.poll() is None, "the trial saved nothing in time"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        subprocess.run(["pkill", "-9", "-f", str(out)], check=False)  # (Ray's workers of this sweep, wherever they were parented)
    assert not (run / "results.json").exists(), "the trial finished before the kill: give it more steps"
    res = run_cli(["sweep", str(sweep), "--out", str(out), "--resume", "--num-cpus", "1"])
    assert res.returncode == 0, res.stdout + res.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["resumed_at_step"] >= 500, config  # from the save, not from step 0
    assert [s for s, _ in evaluations(run)] == list(range(500, 4001, 500))  # the curve before the kill is kept
    assert json.loads((run / "results.json").read_text())["total_steps"] == 4000


@pytest.fixture(scope="module")
def asha_sweep(tmp_path_factory):
    """lr 0 leaves the policy untrained; one trial at a time, the good one first, so the rung at step 50
    holds the good trial's result when the bad one arrives."""
    tmp = tmp_path_factory.mktemp("asha")
    sweep = write_sweep(tmp / "asha.yaml", seeds="0-2", steps=150, eval_freq=50, params=LEARNS, grid={"lr": [1e-3, 0.0]},
                        scheduler={"type": "asha", "grace_period": 50, "reduction_factor": 2}, max_concurrent_trials=1)
    res = run_cli(["sweep", str(sweep), "--out", str(tmp / "out"), "--num-cpus", "1"])
    assert res.returncode == 0, res.stdout + res.stderr
    return tmp, res


@pytest.mark.ray
@needs_ray
@pytest.mark.slow  # 28 s on 2 busy cores: the default suite keeps the embedded, cluster and resume runs (~95 s together)
def test_asha_stops_a_clearly_worse_trial(asha_sweep):
    tmp_path, res = asha_sweep
    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())
    good, bad = doc["trials"]["diffusion-ql_bandit2d-v0_lr=0.001"], doc["trials"]["diffusion-ql_bandit2d-v0_lr=0"]
    assert good["status"] == "finished" and bad["status"] == "stopped_early", doc["trials"]
    assert "stopped early by ASHA at step 50" in res.stderr
    bad_run = tmp_path / "out" / bad["run_dir"]
    results = json.loads((bad_run / "results.json").read_text())
    assert results["stopped_early"] and results["total_steps"] == 50 and results["budget"] == 150
    assert [(e["step"], round(e["mean_return"], 3)) for e in results["evaluations"]] == [(50, 0.017)]
    good_evals = evaluations(tmp_path / "out" / good["run_dir"])
    assert [s for s, _ in good_evals] == [50, 100, 150] and good_evals[0][1] > 1.0
    rows = (bad_run / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("eval/mean_return")
    assert [round(float(r.split(",")[column]), 3) for r in rows[1:] if r.split(",")[column]] == [0.017], "metrics.csv ends at the stop"
    assert not list(bad_run.glob("model*.zip"))


@pytest.mark.ray
@needs_ray
@pytest.mark.slow
def test_an_optuna_search_runs_and_resumes_with_its_finished_trials(tmp_path):
    sweep = write_sweep(tmp_path / "opt.yaml", grid=None, search="optuna", num_samples=2, steps=20, space={"eta": {"loguniform": [0.1, 10.0]}})
    out = tmp_path / "out"
    res = run_cli(["sweep", str(sweep), "--out", str(out), "--num-cpus", "2"])
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert [e["status"] for e in doc["trials"].values()] == ["finished"] * 2
    kept, lost = sorted(doc["trials"])
    assert all(0.1 <= e["params"]["eta"] <= 10.0 for e in doc["trials"].values())
    (out / "trials" / lost / "results.json").unlink()  # as if that trial had been interrupted
    before = {p.name: p.stat().st_mtime_ns for p in (out / "trials" / kept).iterdir()}
    res = run_cli(["sweep", str(sweep), "--out", str(out), "--resume", "--num-cpus", "2"])
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["trials"][kept]["status"] == "finished" and doc["trials"][lost]["status"] == "superseded"
    new = [n for n in doc["trials"] if n not in (kept, lost)]
    assert len(new) == 1 and doc["trials"][new[0]]["status"] == "finished"
    assert {p.name: p.stat().st_mtime_ns for p in (out / "trials" / kept).iterdir()} == before


@pytest.mark.ray
@needs_ray
@pytest.mark.slow
def test_a_trial_on_a_lost_node_fails_and_resume_runs_it_again(tmp_path, two_node_cluster):
    sweep = write_sweep(tmp_path / "lost.yaml", steps=400, eval_freq=20)
    out = tmp_path / "out"
    head, worker = two_node_cluster.head_node, next(n for n in two_node_cluster.list_all_nodes() if n is not two_node_cluster.head_node)
    env = {**_env(), **LOOPBACK}
    proc = subprocess.Popen([sys.executable, "-m", "dqltoolkit.cli", "sweep", str(sweep), "--out", str(out), "--address", two_node_cluster.address],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # until the worker node's trial has reported an evaluation
            doc = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").exists() else {"trials": {}}
            if any(e.get("node") == worker.node_id and e["status"] == "running" for e in doc["trials"].values()):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            raise AssertionError("no trial reported from the worker node")
        two_node_cluster.remove_node(worker)  # the node is lost
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    doc = json.loads((out / "sweep.json").read_text())
    statuses = {n: e["status"] for n, e in doc["trials"].items()}
    assert proc.returncode == 1 and sorted(statuses.values()) == ["error", "finished"], stdout + stderr
    lost = next(n for n, s in statuses.items() if s == "error")
    assert doc["trials"][lost]["node"] == worker.node_id and doc["trials"][lost]["error"]
    res = run_cli(["sweep", str(sweep), "--out", str(out), "--resume", "--address", two_node_cluster.address], env=LOOPBACK)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["attempts"][1]["skipped"] == [n for n in statuses if n != lost]
    assert doc["trials"][lost]["status"] == "finished" and doc["trials"][lost]["node"] == head.node_id


# --- the report of a sweep ------------------------------------------------------------------------------------


def _report_rows(md: str, task: str) -> dict:
    """algorithm -> the cells of its row in the task's table of report.md."""
    table = md.split(f"### {task}")[1].split("\n\n")[2]
    return {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in table.splitlines()[2:]}


@pytest.mark.ray
@needs_ray
def test_the_report_of_an_embedded_sweep_names_trials_by_their_swept_keys(embedded_sweep, tmp_path):
    out, _, _ = embedded_sweep
    res = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "r"), "--reps", "200"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "report.md").read_text()
    rows = _report_rows(md, "bandit2d-v0")
    assert list(rows) == ["diffusion-ql eta=0.1", "diffusion-ql eta=10"] and all(r[0] == "2" for r in rows.values())
    for name, alg in zip(NAMES, rows):
        final = [e["mean_return"] for e in json.loads((out / "trials" / name / "results.json").read_text())["evaluation"]]
        assert rows[alg][1].startswith(f"{sum(final) / 2:.3f} [")
        assert f"| {name} | {alg} | bandit2d-v0 | 0, 1 | 40 |" in md
    assert "## Skipped" not in md and "## Notes" not in md and (tmp_path / "r" / "learning_curves.png").stat().st_size > 10_000


@pytest.mark.ray
@needs_ray
@pytest.mark.slow  # (shares the ASHA sweep of test_asha_stops_a_clearly_worse_trial: the report itself takes a second)
def test_the_report_of_an_asha_sweep_lists_the_stopped_trial_apart(asha_sweep):
    tmp_path, _ = asha_sweep
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["report", str(out), "--reps", "200"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    md = (out / "report" / "report.md").read_text()
    rows = _report_rows(md, "bandit2d-v0")
    assert list(rows) == ["diffusion-ql lr=0", "diffusion-ql lr=0.001"]
    stopped, good = rows["diffusion-ql lr=0"], rows["diffusion-ql lr=0.001"]
    assert stopped[:3] == ["0 + 3†", "—", "—"] and stopped[3].startswith("0.017 [") and stopped[3].endswith("]†")
    assert good[0] == "3" and float(good[1].split(" [")[0]) > 1.0
    bad = "diffusion-ql_bandit2d-v0_lr=0"
    assert (f"- stopped early by ASHA: diffusion-ql lr=0 on bandit2d-v0 ({bad}) at step 50 of its 150; last evaluation (step 50): "
            "return 0.017 (mean of 3 seed(s)). Not in the final statistics") in md
    assert f"| {bad} | diffusion-ql lr=0 | bandit2d-v0 | 0, 1, 2 | 50† of 150 (stopped early by asha) |" in md
    assert "## Skipped" not in md and "tune" not in {p.name for p in (out / "report").iterdir()}
    with open(out / "report" / "evaluations.csv", newline="") as f:
        kinds = {(r["run"], r["kind"]) for r in csv.DictReader(f)}
    assert kinds == {(bad, "periodic"), ("diffusion-ql_bandit2d-v0_lr=0.001", "periodic"), ("diffusion-ql_bandit2d-v0_lr=0.001", "final")}
