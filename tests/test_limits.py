"""Every size a user can type is checked before work starts (dqltoolkit/limits.py and the settings' stated
maxima): one line naming the field, the value and the limit, a non-zero exit, in seconds, under 1.5 GB."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SIX_KEYS = {k: list(range(1, 11)) for k in ("eta", "lr", "tau", "gamma", "grad_norm", "ema_decay")}


def run_measured(args, env=None):
    """``(exit code, last output line, seconds, peak RSS in MB)`` of ``dqltoolkit ARGS`` in its own process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dqltoolkit.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return proc.returncode, lines[-1] if lines else "", time.perf_counter() - t0, usage.ru_maxrss / 1024


def sweep_file(tmp_path, **fields):
    doc = {"agents": "diffusion-ql", "tasks": "bandit2d-v0", "seeds": "0-99", "steps": 100, "eval_freq": 50, "grid": SIX_KEYS, **fields}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


CASES = [
    (["train", "--env", "bandit2d-v0", "-p", "batch_size=1000000000"], "batch_size=1000000000 is above its maximum 16,777,216"),
    (["train", "--env", "bandit2d-v0", "-p", "batch_size=16000000"], "one training step with batch_size=16000000 (1 seed(s)) needs at least"),
    (["train", "--env", "bandit2d-v0", "--seeds", "0-99999999"], "seeds=100000000 is over the limit of 1024"),
    (["train", "--env", "bandit2d-v0", "-p", "hidden=16000", "-p", "n_layers=64"], "hidden=16000, n_layers=64"),
    (["train", "--env", "bandit2d-v0", "-p", "T=100000000"], "T=100000000 is above its maximum 10,000"),
    (["train", "--env", "bandit2d-v0", "-p", "n_candidates=100000000"], "n_candidates=100000000 is above its maximum 10,000"),
    (["train", "--env", "bandit2d-v0", "-p", "eval_episodes=100000000"], "eval_episodes=100000000 is above its maximum 10,000"),
    (["evaluate", "zoo:diffusion-ql-bandit2d-v0", "--episodes", "100000000"], "episodes=100000000 is over the limit of 10000"),
    (["export", "zoo:diffusion-ql-bandit2d-v0", "--candidates", "100000000"], "--candidates=100000000 is over the limit of 10000"),
    (["dataset", "build", "hopper", "--levels", "random", "--transitions", "1000000000000"], "--transitions=1000000000000 is over the limit"),
    (["dataset", "build", "hopper", "--budget", "1000000000000"], "--budget=1000000000000 is over the limit"),
]


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(a[:1] + a[-1:]) for a, _ in CASES])
def test_a_size_over_its_limit_is_refused_at_once(args, expected, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dqltoolkit.cli import main

    monkeypatch.setenv("DQLTOOLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, args + (["--out", str(tmp_path / "o")] if args[0] == "train" else []))
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code in (1, 2) and lines[-1].startswith("Error:") and expected in lines[-1], res.output  # (2: click's usage error)
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("args", [["train", "--env", "bandit2d-v0", "-p", "batch_size=16000000"], ["train", "--env", "bandit2d-v0", "-p", "hidden=16000", "-p", "n_layers=64"]])
def test_refusals_take_seconds_and_little_memory(args, tmp_path):
    code, line, seconds, mb = run_measured(args + ["--out", str(tmp_path / "o")])
    assert code == 1 and "needs at least" in line and seconds < 30 and mb < 1500, (line, seconds, mb)


def test_a_sweep_of_a_hundred_million_seed_runs_is_refused_from_the_file_alone(tmp_path):
    code, line, seconds, mb = run_measured(["sweep", str(sweep_file(tmp_path)), "--out", str(tmp_path / "out")])
    assert code == 1 and "expands to 1,000,000 trials of 100 seeds each (1 agent(s) x 1 task(s) x 10 ema_decay x 10 eta" in line, line
    assert "use search: random (or optuna) with a space and num_samples" in line and "max_trials: 1000000" in line
    assert seconds < 30 and mb < 1500 and not (tmp_path / "out").exists()


def test_a_sweep_may_raise_its_own_trial_limit(tmp_path):
    from dqltoolkit.sweep_spec import SweepError, load_sweep

    grid = {"eta": [1.0, 2.0, 3.0], "lr": [1e-3, 3e-4]}
    with pytest.raises(SweepError, match="expands to 6 trials .* over the limit of 5"):
        load_sweep(sweep_file(tmp_path, grid=grid, seeds=0, max_trials=5))
    assert len(load_sweep(sweep_file(tmp_path, grid=grid, seeds=0, max_trials=6)).grid_trials()) == 6


def test_report_refuses_absurd_resamples(tmp_path):
    (tmp_path / "r").mkdir()
    code, line, _, _ = run_measured(["report", str(tmp_path / "r"), "--reps", "1000000000"])
    assert code == 1 and "--reps=1000000000 is over the limit of 1000000" in line


def test_fixed_limits_can_be_lifted_on_purpose_but_memory_checks_stay(monkeypatch):
    from dqltoolkit.limits import LimitError, check_agent, check_limit

    with pytest.raises(LimitError, match="seeds=2000 is over the limit of 1024"):
        check_limit("seeds", 2000, 1024)
    monkeypatch.setenv("DQLTOOLKIT_LIMITS", "off")
    assert check_limit("seeds", 2000, 1024) == 2000
    with pytest.raises(LimitError, match="needs at least .* free: lower batch_size"):
        check_agent({"hidden": 256, "n_layers": 3, "critic_hidden": 256, "critic_layers": 3, "batch_size": 10**9}, 11, 3, 1)
    check_agent({"hidden": 256, "n_layers": 3, "critic_hidden": 256, "critic_layers": 3, "batch_size": 256}, 11, 3, 5)  # the paper's: fits
