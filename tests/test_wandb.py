"""`train --logger wandb`: an offline Weights & Biases run (no account, no network) holding the run's resolved
config, its metrics at their gradient steps, its evaluations and its end, however the run ends.

The runs are read back from wandb's own offline file (``run-<id>.wandb``: a LevelDB-style log of wandb's
protobuf ``Record`` messages, the file ``wandb sync`` uploads), parsed with wandb's own message classes.
Nothing may leave the machine: in this process every connection to a non-loopback address fails and is
recorded, and wandb's service process (a separate binary) is pointed at a trap server on 127.0.0.1, both
as its base URL and as its HTTP(S) proxy; each test asserts that neither saw anything.
"""

import csv
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

import dqltoolkit
from dqltoolkit.cli import main

try:
    import wandb
except ImportError:  # the extra is not installed: only the test of its error message runs
    wandb = None
needs_wandb = pytest.mark.skipif(wandb is None, reason="needs the wandb extra: pip install 'dqltoolkit[wandb]'")

ROOT = Path(dqltoolkit.__file__).resolve().parent.parent
TINY = dict(T=3, hidden=16, critic_hidden=16, time_dim=8, batch_size=32, n_candidates=4, log_every=5)
CLI_TINY = [a for k, v in TINY.items() for a in ("-p", f"{k}={v}")]
main_thread_only = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                      reason="Python delivers signals to the main thread only")


# ---- reading an offline run ----

_BLOCK = 32768  # the log's block size; a record never starts in a block's last 6 bytes


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file (header {data[:7]!r})"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # the block's trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or the LAST piece of a record split across blocks
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(run_dir: Path) -> dict:
    """An offline run: its config, its history rows (by step), its summary and its exit code (None: never finished)."""
    (path,) = run_dir.glob("run-*.wandb")
    config, rows, summary, exit_code = {}, {}, {}, None
    for r in _records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            config.update({_key(i): json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            rows[row["_step"]] = row
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "exit":
            exit_code = r.exit.exit_code
    return {"config": config, "history": [rows[s] for s in sorted(rows)], "summary": summary, "exit_code": exit_code}


def offline_runs(folder: Path):
    return sorted((folder / "wandb").glob("offline-run-*"))


def logged_steps(metrics: Path):
    steps = []
    if metrics.is_file():
        for row in csv.DictReader(metrics.open()):
            try:
                steps.append(int(float(row["time/step"])))
            except (KeyError, TypeError, ValueError):
                pass
    return steps


# ---- no network ----


class _Trap(BaseHTTPRequestHandler):
    def _any(self):
        self.server.seen.append((self.command, self.path))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_HEAD = do_CONNECT = do_PATCH = _any

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def trap():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trap)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    wandb.teardown()  # stop wandb's service process while the trap is still there
    server.shutdown()
    server.server_close()


def _trap_env(trap, home: Path) -> dict:
    url = f"http://127.0.0.1:{trap.server_address[1]}"
    env = {"WANDB_BASE_URL": url, "HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url, "ALL_PROXY": url,
           "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
           "WANDB_DATA_DIR": str(home / "data"), "WANDB_ARTIFACT_DIR": str(home / "artifacts")}
    return env


@pytest.fixture
def no_network(trap, tmp_path, monkeypatch):
    """wandb with no way out: its settings in tmp_path, no account, WANDB_MODE and WANDB_DIR unset (the
    defaults under test), every non-loopback connection of this process refused and recorded."""
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY", "WANDB_ENTITY", "WANDB_RUN_ID", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in _trap_env(trap, tmp_path / "wandb-home").items():
        monkeypatch.setenv(name, value)
    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def local(address) -> bool:
        return not isinstance(address, tuple) or str(address[0]) in ("127.0.0.1", "::1", "localhost")

    def connect(self, address):
        if not local(address):
            attempts.append(address)
            raise OSError(f"test_wandb: no network access (connect to {address})")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "127.0.0.1", "::1", "localhost"):
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"test_wandb: no network access (asked for {host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    seen = len(trap.seen)
    yield attempts
    assert attempts == [], f"wandb tried to reach the network: {attempts}"
    assert trap.seen[seen:] == [], f"wandb's service tried to reach the network: {trap.seen[seen:]}"


def cli(*args):
    return CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--no-progress", *CLI_TINY, *args], catch_exceptions=False)


# ---- the tests ----


@needs_wandb
def test_offline_run_holds_config_metrics_evaluations_and_results(tmp_path, no_network):
    out = tmp_path / "run"
    res = cli("--steps", "12", "--eval-freq", "10", "--out", str(out), "--logger", "csv,wandb")
    assert res.exit_code == 0, res.output
    (run_dir,) = offline_runs(out)  # offline by default, under the run's folder
    assert f"W&B run (offline): {run_dir}; upload it with `wandb sync {run_dir}`" in res.output
    run = read_run(run_dir)
    assert run["exit_code"] == 0

    # the config is config.yaml's content: the recipe keys as resolved, the task, the seeds, the backend
    import yaml

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert {k: run["config"][k] for k in resolved} == resolved
    assert run["config"]["config"]["T"] == 3 and run["config"]["config"]["hidden"] == 16 and run["config"]["env"] == "bandit2d-v0"
    assert run["config"]["config"]["head"] == "diffusion" and run["config"]["steps_this_run"] == 12

    # the history: the diagnostics every log_every steps and at the end, W&B's step = the gradient step,
    # the same numbers as metrics.csv; the evaluation at step 10 in that step's row
    history = run["history"]
    assert [r["_step"] for r in history] == [5, 10, 12] == sorted(set(logged_steps(out / "metrics.csv")))
    csv_rows = {}  # metrics.csv has a row per dump: the diagnostics, then (at step 10) the evaluation
    for row in csv.DictReader((out / "metrics.csv").open()):
        csv_rows.setdefault(int(float(row["time/step"])), {}).update({k: float(v) for k, v in row.items() if v != ""})
    for mine in history:
        theirs = csv_rows[mine["_step"]]
        assert set(theirs) <= set(mine)
        for key in theirs:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6), key
    rows = [csv_rows[s] for s in sorted(csv_rows)]
    assert "eval/mean_return" in history[1] and "eval/mean_return" not in history[0]
    results = json.loads((out / "results.json").read_text())
    assert history[1]["eval/mean_return"] == pytest.approx(results["evaluations"][0]["mean_return"])

    # the summary: the final evaluation (1,000 bandit episodes) and the timings from results.json
    summary = run["summary"]
    assert summary["final/mean_return"] == pytest.approx(results["mean_return"])
    assert summary["final/seed0/episodes"] == 1000 and summary["final/best_mode_share"] == pytest.approx(results["evaluation"][0]["best_mode_share"])
    assert summary["final/steps"] == 12 and summary["final/total_steps"] == 12
    assert summary["train/critic_loss"] == pytest.approx(float(rows[-1]["train/critic_loss"]))


@needs_wandb
@main_thread_only
def test_sigterm_finishes_the_run_marked_with_what_was_saved(tmp_path, no_network, monkeypatch):
    """SIGTERM inside step 7: the loop stops after it, model_interrupted.zip holds step 7, and the W&B run is
    finished with exit code 143, the stop step and the checkpoint in its summary, and step 7's metrics logged."""
    from dqltoolkit.learner import TransitionBuffer

    real, calls = TransitionBuffer.sample, {"n": 0}

    def sample(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TransitionBuffer, "sample", sample)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # wandb's own setting is honoured
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--env", "bandit2d-v0", "--no-progress", *CLI_TINY, "--steps", "50", "--out", str(out),
                                    "--logger", "wandb"])
    assert res.exit_code == 128 + signal.SIGTERM, res.output
    assert dqltoolkit.load(out / "model_interrupted.zip", device="cpu").num_timesteps == 7
    assert not (out / "wandb").exists()
    (run_dir,) = offline_runs(tmp_path / "elsewhere")
    run = read_run(run_dir)
    assert run["exit_code"] == 143
    assert run["summary"]["stopped_by"] == "SIGTERM" and run["summary"]["stopped_at_step"] == 7
    assert run["summary"]["checkpoint"] == str(out / "model_interrupted.zip")
    assert [r["_step"] for r in run["history"]] == [5, 7] == sorted(set(logged_steps(out / "metrics.csv")))
    assert not any(k.startswith("final/") for k in run["summary"])


@needs_wandb
def test_a_failed_run_is_finished_as_failed(tmp_path, no_network, monkeypatch):
    from dqltoolkit.training import train

    def broken(*args, **kwargs):
        raise RuntimeError("the evaluation broke")

    monkeypatch.setattr("dqltoolkit.training._evaluate_run", broken)
    with pytest.raises(RuntimeError, match="the evaluation broke"):
        train("diffusion-ql", "bandit2d-v0", tmp_path / "run", steps=5, overrides=TINY, device="cpu", progress=False, verbose=False,
              loggers=["wandb"])
    run = read_run(offline_runs(tmp_path / "run")[0])
    assert run["exit_code"] == 1 and run["summary"]["error"] == "RuntimeError: the evaluation broke"
    assert [r["_step"] for r in run["history"]] == [5]


@needs_wandb
def test_ctrl_c_on_the_terminal_finishes_the_run(tmp_path, trap):
    """Ctrl-C signals the whole foreground process group: the run still ends with every logged step and exit code 130."""
    out = tmp_path / "run"
    env = {**os.environ, **_trap_env(trap, tmp_path / "wandb-home"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "NO_PROXY", "no_proxy"):
        env.pop(name, None)
    seen = len(trap.seen)
    proc = subprocess.Popen([sys.executable, "-m", "dqltoolkit.cli", "train", "--env", "bandit2d-v0", "--no-progress", *CLI_TINY,
                             "-p", "log_every=1", "--steps", "1000000", "--out", str(out), "--logger", "wandb", "--threads", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 120
        while len(logged_steps(out / "metrics.csv")) < 3:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < end, "timed out waiting for the run"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    step = dqltoolkit.load(out / "model_interrupted.zip", device="cpu").num_timesteps
    run = read_run(offline_runs(out)[0])
    assert run["exit_code"] == 130 and run["summary"]["stopped_at_step"] == step
    assert [r["_step"] for r in run["history"]] == sorted(set(logged_steps(out / "metrics.csv"))) and run["history"][-1]["_step"] == step
    assert trap.seen[seen:] == [], trap.seen[seen:]


@needs_wandb
def test_sigterm_after_the_learn_loop_finishes_the_run_before_the_process_ends(tmp_path, trap):
    """SIGTERM during the final evaluation (outside the loop's deferred signals) still ends the process as
    SIGTERM does, but only after the W&B run is finished: its buffered record would be lost otherwise."""
    out = tmp_path / "run"
    env = {**os.environ, **_trap_env(trap, tmp_path / "wandb-home"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "NO_PROXY", "no_proxy"):
        env.pop(name, None)
    script = ("import os, signal, sys, time\nimport dqltoolkit.training as t\nfrom dqltoolkit.cli import main\n"
              "def evaluate(*args, **kwargs):\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n"
              "t._evaluate_run = evaluate\nmain(sys.argv[1:])\n")
    seen = len(trap.seen)
    done = subprocess.run([sys.executable, "-c", script, "train", "--env", "bandit2d-v0", "--no-progress", *CLI_TINY, "--steps", "12",
                           "--out", str(out), "--logger", "wandb", "--threads", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == -signal.SIGTERM, done.stderr  # ended by the signal, as without the guard
    assert (out / "model.zip").is_file() and not (out / "results.json").exists()
    run = read_run(offline_runs(out)[0])
    assert run["exit_code"] == 143 and run["summary"]["stopped_by"] == "SIGTERM"
    assert run["summary"]["stopped_during"] == "the end of the run (after the learn loop)"
    assert [r["_step"] for r in run["history"]] == [5, 10, 12]
    assert trap.seen[seen:] == [], trap.seen[seen:]


def test_without_wandb_installed_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    out = tmp_path / "run"
    res = cli("--steps", "2", "--out", str(out), "--logger", "csv,wandb")
    assert res.exit_code == 1
    assert "--logger wandb needs the wandb package: pip install 'dqltoolkit[wandb]'" in res.output
    assert not out.exists()  # refused before anything ran


def test_help_does_not_import_wandb():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom dqltoolkit.cli import main\n"
            "for args in (['--help'], ['train', '--help']):\n    assert CliRunner().invoke(main, args).exit_code == 0\n"
            "import dqltoolkit.training\nprint('wandb' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
