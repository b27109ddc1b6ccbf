"""Faults lose nothing: real SIGTERM/SIGINT/SIGKILL on the CLI, exact resumes from an interrupt, and
divergence that never saves NaN weights over a good checkpoint."""

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dqltoolkit
from dqltoolkit.checkpoint import read_checkpoint
from dqltoolkit.faults import TrainingInterrupted
from dqltoolkit.training import TrainingDiverged, train

TINY = dict(T=3, hidden=16, critic_hidden=16, time_dim=8, batch_size=32, n_candidates=4, log_every=5)
CLI_TINY = [a for k, v in TINY.items() for a in ("-p", f"{k}={v}")]
ROOT = Path(dqltoolkit.__file__).resolve().parent.parent

main_thread_only = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                      reason="Python delivers signals to the main thread only")


_STARTED: list = []


@pytest.fixture(autouse=True)
def no_run_outlives_its_test():
    """A test that fails while its 1M-step run is still going must not leave the run eating a core."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def start_cli(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-m", "dqltoolkit.cli", "train", "--env", "bandit2d-v0", "--no-progress", *CLI_TINY, *args],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    return proc


def logged_steps(metrics: Path):
    """Steps of the rows in a metrics.csv that a killed process may have left with a partial last line."""
    if not metrics.is_file():
        return []
    steps = []
    for row in csv.DictReader(metrics.open()):
        try:
            steps.append(int(float(row["time/step"])))
        except (KeyError, TypeError, ValueError):
            pass
    return steps


def wait_for(predicate, proc, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the run")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_leaves_a_loadable_interrupt_checkpoint(tmp_path, sig):
    out = tmp_path / "run"
    proc = start_cli(["--steps", "1000000", "--out", str(out), "-p", "log_every=1"], tmp_path)
    wait_for(lambda: len(logged_steps(out / "metrics.csv")) >= 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    ckpt = out / "model_interrupted.zip"
    assert f"interrupted by {signal.Signals(sig).name} at step" in err and str(ckpt) in err and "--resume" in err
    model = dqltoolkit.load(ckpt, device="cpu")
    assert model.num_timesteps >= 3
    # stopped between steps: the interrupt step's metrics are logged and the checkpoint holds exactly that step
    assert logged_steps(out / "metrics.csv")[-1] == model.num_timesteps
    assert f"at step {model.num_timesteps}:" in err
    assert not (out / "model.zip").exists() and not (out / "results.json").exists()


def test_save_every_bounds_what_sigkill_loses(tmp_path):
    out = tmp_path / "run"
    proc = start_cli(["--steps", "1000000", "--out", str(out), "--save-every", "5", "-p", "log_every=1"], tmp_path)
    wait_for(lambda: (out / "model_latest.zip").is_file() and len(logged_steps(out / "metrics.csv")) >= 23, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=30)
    latest = dqltoolkit.load(out / "model_latest.zip", device="cpu")
    last = logged_steps(out / "metrics.csv")[-1]
    assert latest.num_timesteps % 5 == 0 and latest.num_timesteps >= 20
    assert last - latest.num_timesteps <= 5, (last, latest.num_timesteps)
    assert all(torch.isfinite(p).all() for p in latest.head.parameters())
    # the folder holds an unfinished run now: a new run into it is refused (the dead run's lock is gone)
    from click.testing import CliRunner

    from dqltoolkit.cli import main

    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--steps", "2", "--out", str(out), "--no-progress", *CLI_TINY])
    assert res.exit_code != 0 and "holds an unfinished run (model_latest.zip)" in res.output
    assert f"--resume {out / 'model_latest.zip'}" in res.output
    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--steps", "2", "--out", str(out), "--no-progress",
                                    "--resume", str(out / "model_latest.zip")])
    assert res.exit_code == 0, res.output
    assert dqltoolkit.load(out / "model.zip").num_timesteps == latest.num_timesteps + 2


def _signal_during_step(monkeypatch, at_call: int, sig: int):
    """Send ``sig`` to this process from inside the ``at_call``-th batch draw: mid-step, after the step drew
    its batch and before its updates (where a raw KeyboardInterrupt used to land)."""
    from dqltoolkit.learner import TransitionBuffer

    real = TransitionBuffer.sample
    calls = {"n": 0}

    def sample(self, *args, **kwargs):
        calls["n"] += 1
        batch = real(self, *args, **kwargs)
        if calls["n"] == at_call:
            os.kill(os.getpid(), sig)
        return batch

    monkeypatch.setattr(TransitionBuffer, "sample", sample)


@main_thread_only
@pytest.mark.parametrize("seeds,sig", [([3], signal.SIGTERM), ([0, 1, 2, 3, 4], signal.SIGINT)])
def test_resume_from_a_signal_equals_the_uninterrupted_run(tmp_path, monkeypatch, seeds, sig):
    kw = dict(overrides={**TINY, "lr_decay": True, "ema_start": 2, "ema_every": 3}, seeds=seeds, device="cpu", progress=False,
              verbose=False, evaluate_at_end=False)
    whole = train("diffusion-ql", "bandit2d-v0", tmp_path / "whole", steps=12, **kw)
    before = signal.getsignal(sig)
    with monkeypatch.context() as m:
        _signal_during_step(m, at_call=7, sig=sig)
        with pytest.raises(TrainingInterrupted) as stop:
            train("diffusion-ql", "bandit2d-v0", tmp_path / "cut", steps=12, **kw)
    assert signal.getsignal(sig) is before  # the run's handlers are gone
    assert stop.value.step == 7 and stop.value.exact and stop.value.signum == sig
    ckpt = tmp_path / "cut" / "model_interrupted.zip"
    assert stop.value.checkpoint == ckpt and dqltoolkit.load(ckpt).num_timesteps == 7
    resumed = train(None, "bandit2d-v0", tmp_path / "resumed", resume=ckpt, device="cpu", progress=False, verbose=False,
                    evaluate_at_end=False)
    assert resumed.results["steps"] == 5 and resumed.results["first_step"] == 7 and resumed.results["seeds"] == seeds
    assert [p.name for p in resumed.checkpoints] == [p.name for p in whole.checkpoints]  # every seed resumed
    for a, b in zip(whole.checkpoints, resumed.checkpoints):
        doc_a, ta = read_checkpoint(a)
        doc_b, tb = read_checkpoint(b)
        assert doc_a["num_timesteps"] == doc_b["num_timesteps"] == 12 and doc_a["config"] == doc_b["config"]
        assert sorted(ta) == sorted(tb)
        differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not differ, differ
        ma, mb = dqltoolkit.load(a), dqltoolkit.load(b)
        obs = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
        np.testing.assert_array_equal(ma.predict(obs)[0], mb.predict(obs)[0])


def _poison_after(monkeypatch, step: int, value: float):
    """Set the critic's last bias to ``value`` right after gradient step ``step``."""
    from dqltoolkit.agent import Agent

    real = Agent.train_step

    def train_step(self, batch=None):
        info = real(self, batch)
        if self.num_timesteps == step:
            with torch.no_grad():
                self.critic.q.layers[-1].bias.fill_(value)
        return info

    monkeypatch.setattr(Agent, "train_step", train_step)


def test_divergence_is_caught_between_log_steps_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    import dqltoolkit.loop as loop

    monkeypatch.setattr(loop, "DIVERGENCE_CHECK_EVERY", 4)
    _poison_after(monkeypatch, 10, float("nan"))
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        train("diffusion-ql", "bandit2d-v0", out, steps=40, overrides={**TINY, "log_every": 1000}, device="cpu", progress=False,
              verbose=False, save_every=4)
    msg = str(err.value)
    assert "at step 12" in msg and "critic_loss" in msg  # within 4 steps, not at log step 40
    assert f"the last finite checkpoint is {out / 'model_latest.zip'} (step 8)" in msg and "NaN/Inf" in msg
    assert err.value.checkpoint == out / "model_latest.zip"
    assert not (out / "model_interrupted.zip").exists() and not (out / "model_diverged.zip").exists()
    good = dqltoolkit.load(out / "model_latest.zip")
    assert good.num_timesteps == 8 and all(torch.isfinite(p).all() for p in good.critic.parameters())

    # resumed into the same folder without --save-every: the checkpoint it came from is named, and left alone
    source = out / "model_latest.zip"
    data = source.read_bytes()
    with pytest.raises(TrainingDiverged) as err:
        train(None, "bandit2d-v0", out, resume=source, steps=20, device="cpu", progress=False, verbose=False)
    assert f"the last finite checkpoint is {source} (step 8)" in str(err.value)
    assert source.read_bytes() == data


def test_divergence_with_finite_weights_saves_them_as_diverged(tmp_path, monkeypatch):
    _poison_after(monkeypatch, 3, 1e6)  # Q of order 1e6: a critic loss over the 1e8 limit, weights still finite
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        train("diffusion-ql", "bandit2d-v0", out, steps=20, overrides=TINY, device="cpu", progress=False, verbose=False)
    assert "critic_loss" in str(err.value) and f"is in {out / 'model_diverged.zip'}" in str(err.value)
    assert dqltoolkit.load(out / "model_diverged.zip").num_timesteps == 5


@main_thread_only
def test_interrupted_progress_bar_stops_where_the_run_did(tiny_agent, capsys):
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAt7(BaseCallback):
        def _on_step(self):
            if self.num_timesteps == 7:
                os.kill(os.getpid(), signal.SIGINT)
            return True

    with pytest.raises(KeyboardInterrupt):
        tiny_agent.learn(200, callback=StopAt7(), progress_bar=True)
    assert tiny_agent.num_timesteps == 7
    err = capsys.readouterr().err
    assert "7/200" in err and "200/200" not in err


@main_thread_only
def test_signal_guard_defers_restores_and_leaves_ignored_signals_alone():
    from dqltoolkit.faults import DeferredSignals

    before = signal.getsignal(signal.SIGINT)
    with DeferredSignals() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.pending == signal.SIGINT  # recorded, nothing raised yet
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(TrainingInterrupted, match="SIGINT at step 4"):
            guard.check(4)
    assert signal.getsignal(signal.SIGINT) is before
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with DeferredSignals():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)
