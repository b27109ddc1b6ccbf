"""The ``sweep`` job: a sweep file -> Ray Tune trials (Tune schedules and places them, past one machine too), each a
standard run folder ``OUT/trials/<trial>/``, and our own book ``OUT/sweep.json``, so that ``--resume`` needs none of
Tune's state. On a cluster ``OUT`` must be at one path on every node (NFS or similar), with dqltoolkit on every node."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .faults import RunLock, RunLockError
from .sweep_spec import ENTRY, SweepError, SweepSpec, Trial, canonical_json, complete_results, distinct_names, fixed_overrides, read_results, typed_value
from .threads import usable_cores

DONE = ("finished", "stopped_early")
# no usage-stats prompt; our run folders are the records (Tune keeps its experiment state); the classic reporter honours verbose=0
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_WARN_THRESHOLD_S": "60",
             "RAY_DEDUP_LOGS": "0", "RAY_AIR_NEW_OUTPUT": "0"}


def _write_json(path: Path, doc: Dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)


class SweepBook:
    """``sweep.json``: the spec, and per trial its values, status, run folder and last report (driver only, atomic writes)."""

    def __init__(self, out: Path, spec: SweepSpec, previous: Optional[Dict[str, Any]] = None,
                 say: Callable[[str], None] = lambda m: None) -> None:
        self.out, self.spec, self.say = out, spec, say
        self.path = out / "sweep.json"
        self.history: Dict[str, List[Dict[str, Any]]] = {}
        self.doc: Dict[str, Any] = previous or {
            "format": 1, "name": spec.name, "spec_file": str(spec.path), "spec": spec.raw, "search": spec.search, "metric": spec.metric,
            "seeds": spec.seeds, "budgets": spec.budgets, "attempts": [], "trials": {}}

    def save(self) -> None:
        _write_json(self.path, self.doc)

    def entry(self, name: str, point: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        trials = self.doc["trials"]
        if name not in trials:
            point = point or {}
            trials[name] = {"agent": point.get("agent"), "task": point.get("task"), "params": point.get("params", {}),
                            "seeds": self.spec.seeds, "steps": self.spec.budgets.get(f"{point.get('agent')}|{point.get('task')}"),
                            "run_dir": f"trials/{name}", "status": "pending", "evaluations": 0}
        return trials[name]

    def started(self, name: str, point: Optional[Dict[str, Any]] = None) -> None:
        e = self.entry(name, point)
        e.update(status="running", evaluations=0, attempt=len(self.doc["attempts"]))
        e.pop("error", None)
        self.history[name] = []
        self.save()

    def reported(self, name: str, result: Dict[str, Any]) -> None:
        e = self.entry(name)
        if ENTRY in result:
            entry = json.loads(result[ENTRY])
            hist = self.history.setdefault(name, [])
            if not hist or hist[-1]["step"] != entry["step"]:
                hist.append(entry)
            e["evaluations"] = len(hist)
        e["last"] = {k: result[k] for k in ("step", "mean_return", "normalized_score") if k in result}
        if "node" in result:
            e["node"] = result["node"]
        self.save()

    def stopped_early(self, name: str, result: Dict[str, Any]) -> None:
        """ASHA stopped the trial after this result (its thread is parked): its run gets a results.json of its evaluations."""
        self.reported(name, result)
        e = self.entry(name)
        hist, step = self.history.get(name, []), int(result["step"])
        last = hist[-1] if hist else {}  # what the run had when it stopped: its last periodic evaluation (no end-of-run one)
        doc = {"stopped_early": True, "stopped_by": "asha", "steps": step, "first_step": 0, "total_steps": step,
               "budget": e.get("steps"), "seeds": self.spec.seeds, "evaluations": hist,
               **{k: last[k] for k in ("mean_return", "normalized_score") if k in last}}
        run_dir = self.out / e["run_dir"]
        if run_dir.is_dir():
            _write_json(run_dir / "results.json", doc)
        e["status"] = "stopped_early"
        self.save()
        self.say(f"stopped early by ASHA at step {step}: {name} ({self._metric_text(e)})")

    def completed(self, name: str, last: Dict[str, Any]) -> None:
        e = self.entry(name)
        if e["status"] != "stopped_early":
            e["status"] = "finished" if last.get("final") else "interrupted"
            if last.get("final"):
                self.reported(name, last)  # (its last result and node)
                self.say(f"finished: {name} ({self._metric_text(e)})")
            self.save()

    def failed(self, name: str, error_file: str) -> None:
        e = self.entry(name)
        try:
            lines = [ln.strip() for ln in Path(error_file).read_text().splitlines() if ln.strip()]
        except OSError:
            lines = []
        e["status"], e["error"] = "error", lines[-1] if lines else "the trial failed (see Ray's logs)"
        self.save()
        self.say(f"error: {name}: {e['error']}")

    def _metric_text(self, e: Dict[str, Any]) -> str:
        last, m = e.get("last", {}), self.spec.metric
        return f"{m} {last[m]:.3f} at step {last.get('step')}" if m in last else "no evaluation"


def _domain(dist: Dict[str, Any]):
    from ray import tune

    kind, args = next(iter(dist.items()))
    return tune.choice(list(args)) if kind == "choice" else getattr(tune, kind)(*args)  # (tune.uniform, loguniform, randint)


def _draw(spec: SweepSpec, key: str, rng: Any) -> Any:
    """One value of a space key from Tune's sampler, typed as ``train -p`` types it (a Python number, not numpy's)."""
    v = _domain(spec.space[key]).sample(random_state=rng)
    return typed_value(spec.path, "space", key, v.item() if hasattr(v, "item") else v)


def planned_trials(spec: SweepSpec) -> List[Trial]:
    """The trials of a grid or random sweep, the same on every run: the grid, or ``num_samples`` draws per grid point."""
    grid = spec.grid_trials()
    if spec.search == "grid":
        return grid
    rng = np.random.default_rng(spec.search_seed)
    out = [Trial.named(b.agent, b.task, {**b.params, **{k: _draw(spec, k, rng) for k in spec.space}}, hashed=True)
           for b in grid for _ in range(spec.num_samples)]
    return distinct_names(spec.path, out, "space", f"search: random drew one point more than once ({spec.num_samples} samples per "
                          "grid point, from search_seed): lower num_samples (a space of choices alone has few points), change "
                          "search_seed, or list the values under grid")


def _check_out(out: Path, spec: SweepSpec, resume: bool) -> Optional[Dict[str, Any]]:
    book = out / "sweep.json"
    if not resume:
        if book.exists():
            raise SweepError(f"{out} holds a sweep already ({book}): continue it with --resume, or choose another --out")
        return None
    if not book.exists():
        raise SweepError(f"--resume: {out} holds no sweep.json, so there is nothing to continue (leave --resume out to start it)")
    try:
        previous = json.loads(book.read_text())
    except ValueError as exc:
        raise SweepError(f"--resume: {book} is not valid JSON ({exc})") from None
    if canonical_json(previous.get("spec", {})) != canonical_json(spec.raw):
        raise SweepError(f"--resume: {spec.path} differs from the sweep that {out} was started with ({previous.get('spec_file')}); "
                         "resume with the same file, or start the changed sweep in another --out")
    return previous


def _start_ray(address: Optional[str], cpus: Optional[int], say: Callable[[str], None]) -> None:
    """Join a cluster (``address`` or RAY_ADDRESS) or start Ray in this process."""
    import ray

    if ray.is_initialized():
        say("using the Ray this process already joined")
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    t0 = time.perf_counter()
    where = (dict(address=address) if address else  # (else on the loopback interface: a Ray for one command serves nobody else)
             dict(num_cpus=cpus or usable_cores(), include_dashboard=False, _node_ip_address="127.0.0.1"))
    ray.init(**where, logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    what = f"joined the Ray cluster at {address}" if address else "started Ray in this process"
    say(f"{what} in {time.perf_counter() - t0:.1f}s: {_resources_text(ray.cluster_resources())}")


def _resources_text(res: Dict[str, float]) -> str:
    import ray

    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return f"{nodes} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"


def run_sweep(spec: SweepSpec, out: Path | str, address: Optional[str] = None, resume: bool = False, cpus: Optional[int] = None,
              say: Callable[[str], None] = lambda m: None) -> Dict[str, Any]:
    """Run (or ``resume``) a sweep into ``out``, locked meanwhile, on the Ray at ``address`` (else RAY_ADDRESS, else one started
    here with ``cpus`` CPUs); returns ``sweep.json``. SIGINT and SIGTERM stop it, running trials marked ``interrupted``."""
    out = Path(out).resolve()
    if not out.exists():
        _check_out(out, spec, resume)  # (--resume of nothing: refused before the folder is made)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(out).__enter__()
    except RunLockError:  # (RunLock opened .lock for writing, so it reads)
        raise SweepError(f"another sweep is running in {out} (process {(out / '.lock').read_text().strip() or 'unknown'} holds "
                         f"{out / '.lock'}): wait for it to end, or choose another --out") from None
    try:
        previous = _check_out(out, spec, resume)
        for module in ["ray.tune"] + (["optuna"] if spec.search == "optuna" else []):
            try:
                importlib.import_module(module)
            except ImportError:
                why = "dqltoolkit sweep needs Ray Tune" if module == "ray.tune" else f"{spec.path}: search: optuna needs optuna"
                raise SweepError(f"{why}: pip install 'dqltoolkit[ray]'") from None
        import ray

        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        (out / "trials").mkdir(exist_ok=True)
        book = SweepBook(out, spec, previous, say)
        todo, skipped = _todo(spec, book, out)
        book.doc["attempts"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "skipped": skipped,
                                     "address": address or os.environ.get("RAY_ADDRESS")})
        book.save()
        if skipped:
            say(f"resuming: {len(skipped)} trial(s) done already, skipped: {', '.join(skipped)}")
        if not todo if spec.search != "optuna" else len(skipped) >= spec.num_samples:
            say("every trial is done")
            return book.doc
        ours = not ray.is_initialized()  # (a Ray this process had joined before is the caller's to end)
        t0 = time.perf_counter()
        previous_handler = _sigterm_as_sigint()
        try:
            try:
                _start_ray(address, cpus, say)
            except SystemExit as exc:  # ray.init sets its own SIGTERM handler first (sys.exit(SIGTERM)): a stop, as ours is
                if exc.code == signal.SIGTERM:
                    raise KeyboardInterrupt from None
                raise
            _sigterm_as_sigint()  # (ours again, in place of ray.init's)
            _fit(spec, out, book, todo, say)
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            book.doc["attempts"][-1]["wall_seconds"] = time.perf_counter() - t0
            for e in book.doc["trials"].values():
                if e["status"] in ("running", "pending"):
                    e["status"] = "interrupted"
            book.save()
            if ours:  # also when ray.init or what followed it failed or was interrupted (shutdown ends what it had started)
                ray.shutdown()
        return book.doc
    finally:
        lock.__exit__(None, None, None)


def _sigterm_as_sigint() -> Any:
    """SIGTERM stops the sweep as Ctrl-C does; returns the handler to put back (None off the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, lambda s, f: os.kill(os.getpid(), signal.SIGINT))
    except ValueError:
        return None


def _todo(spec: SweepSpec, book: SweepBook, out: Path) -> tuple[List[Trial], List[str]]:
    """The trials to run now and the names of those done already (a complete results.json in their folder)."""
    def done(name: str, agent: str, task: str) -> bool:
        res = complete_results(out / "trials" / name, spec.budget(agent, task), spec.seeds)
        if res is not None:
            e = book.entry(name, {"agent": agent, "task": task})
            if e["status"] not in DONE:
                e["status"] = "stopped_early" if res.get("stopped_early") else "finished"
        return res is not None

    if spec.search == "optuna":
        skipped = [n for n, e in book.doc["trials"].items() if done(n, e["agent"], e["task"])]
        for name, e in book.doc["trials"].items():
            if name not in skipped:  # Optuna draws a new sample in its place (the study gets the finished ones back)
                e["status"] = "superseded"
        return [], skipped
    todo, skipped = [], []
    for t in planned_trials(spec):
        if done(t.name, t.agent, t.task):
            skipped.append(t.name)
        else:
            book.entry(t.name, t.point())["status"] = "pending"
            todo.append(t)
    return todo, skipped


def _fit(spec: SweepSpec, out: Path, book: SweepBook, todo: List[Trial], say: Callable[[str], None]) -> None:
    import ray
    from ray import tune

    from .sweep_trial import BookCallback, RecordingASHA, SweepTrial, trial_name_creator

    have = ray.cluster_resources()
    if have.get("CPU", 0) < spec.cpu or have.get("GPU", 0) < spec.gpu:
        raise SweepError(f"{spec.path}: field 'resources_per_trial' asks for {spec.cpu:g} CPU and {spec.gpu:g} GPU per trial, "
                         f"but the Ray cluster has {_resources_text(have)}")
    constants = {"out": str(out), "seeds": spec.seeds, "budgets": spec.budgets, "overrides": fixed_overrides(spec),
                 "cpu": spec.cpu, "gpu": spec.gpu, "save_every": spec.checkpoint_every()}
    search_alg, num_samples = None, 1
    if spec.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        point = {"agent": spec.agents[0], "task": spec.tasks[0], "params": {k: _domain(d) for k, d in spec.space.items()}}
        done = [(e["params"], _final_metric(out / e["run_dir"], spec.metric)) for e in book.doc["trials"].values() if e["status"] in DONE]
        done = [(p, m) for p, m in done if m is not None]
        points = [{f"point/params/{k}": v for k, v in p.items()} for p, _ in done]
        # a resumed study gets the finished trials back and a new seed: the same seed would redraw their points
        search_alg = OptunaSearch(seed=spec.search_seed + len(book.doc["attempts"]) - 1, points_to_evaluate=points or None,
                                  evaluated_rewards=[m for _, m in done] or None)
        num_samples = spec.num_samples - len(done)
        if num_samples <= 0:
            say("every trial is done")
            return
    else:
        point = tune.grid_search([{**t.point(), "name": t.name} for t in todo])
    scheduler = None if spec.scheduler is None else RecordingASHA(
        book, time_attr="step", max_t=max(spec.budgets.values()), grace_period=spec.grace_period(),
        reduction_factor=spec.scheduler["reduction_factor"])
    RunConfig, FailureConfig, CheckpointConfig = _run_configs()
    tuner = tune.Tuner(
        tune.with_resources(SweepTrial, {"cpu": spec.cpu, "gpu": spec.gpu}),
        param_space={"sweep": constants, "point": point},
        tune_config=tune.TuneConfig(metric=spec.metric, mode="max", scheduler=scheduler, search_alg=search_alg, num_samples=num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=False,
                                    trial_name_creator=trial_name_creator, trial_dirname_creator=trial_name_creator),
        run_config=RunConfig(name=f"attempt-{len(book.doc['attempts'])}", storage_path=str(out / "tune"), verbose=0,
                             callbacks=[BookCallback(book)], failure_config=FailureConfig(max_failures=spec.max_failures),
                             checkpoint_config=CheckpointConfig(checkpoint_frequency=0, checkpoint_at_end=False)),
    )
    what = f"{num_samples} Optuna samples" if spec.search == "optuna" else f"{len(todo)} trials"
    gpu = f" and {spec.gpu:g} GPU" if spec.gpu else ""
    say(f"running {what} of {spec.seeds} seeds each, {spec.cpu:g} CPU{gpu} per trial -> {out}")
    tuner.fit()  # (SIGTERM reaches Tune's SIGINT handler: run_sweep redirects it)


def _run_configs() -> tuple:
    """Tune's run configs: under ``ray.tune`` in newer Ray (``ray.train``'s draw a deprecation warning), ``ray.train`` before."""
    from ray import tune

    home = tune if hasattr(tune, "RunConfig") else importlib.import_module("ray.train")
    return home.RunConfig, home.FailureConfig, home.CheckpointConfig


def _final_metric(run_dir: Path, metric: str) -> Optional[float]:
    """What a finished trial told the searcher: its end-of-run (or, stopped, its last) score."""
    doc = read_results(run_dir) or {}
    if metric in doc:
        return float(doc[metric])
    scores = [e[metric] for e in doc.get("evaluation", []) if metric in e]
    return float(sum(scores) / len(scores)) if scores else None
