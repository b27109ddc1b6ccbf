"""The results campaign on a small machine: a sweep file's trials run one after another in resumable
chunks, then gathered into the results record (docs/results/runs.json) that docs/results.md is computed from.

    python benchmarks/campaign.py run sweeps/results-hopper.yaml --out ~/dqltoolkit-campaign --minutes 60
    python benchmarks/campaign.py status sweeps/results-hopper.yaml --out ~/dqltoolkit-campaign
    python benchmarks/campaign.py collect sweeps/results-hopper.yaml --out ~/dqltoolkit-campaign --records docs/results/runs.json
    python benchmarks/campaign.py finetune sweeps/results-hopper.yaml --out ~/dqltoolkit-campaign --from-step 200000 --timesteps 50000
    python benchmarks/campaign.py select sweeps/results-hopper.yaml --out ~/dqltoolkit-campaign --minutes 60
    dqltoolkit report docs/results/runs.json --out docs/results

Why not `dqltoolkit sweep` here: on 2 cores one trial at a time is the whole machine, and a campaign of
hours must stop at a chosen moment (a session's end) and go on later from exactly there. `run` trains the
trials in file order, started ones first (each one `dqltoolkit train` of all its seeds, saving model_latest.zip every
`save_every` steps); at the deadline it sends SIGTERM, which saves model_interrupted.zip after the
current step; the next `run` resumes each unfinished trial from its newest checkpoint, in its own folder,
whose metrics.csv keeps every row before it. A SIGKILL loses at most `save_every` steps. The same sweep
file runs on a cluster with `dqltoolkit sweep` (same trial folders, same resume rule).

`--per-seed` makes each seed of a trial its own run, in `trials/<trial>_seed<k>`: a machine that is replaced
between sessions takes its folder with it, and one seed (Diffusion-QL on hopper, 200k steps: about 80 minutes on
2 cores) fits in a session where a trial of three (about 4 hours) does not; batching seeds in one process buys no
speed on a CPU (`dqltoolkit bench`: the five-seed row's summed steps/s equal one seed's). `collect` reads both
layouts.

Each trial folder gets `campaign.json`: every chunk's CPU (lscpu's model name), wall time and steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def code_version() -> str:
    """The toolkit's code a chunk ran: the git commit of the checkout (``+changes`` where tracked files differ
    from it), else the installed version; a record lists every version its chunks ran, so a table built
    across commits says so."""
    import dqltoolkit

    root = Path(dqltoolkit.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode == 0 and head.stdout.strip():
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=10).stdout.strip()
            return head.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"dqltoolkit {getattr(dqltoolkit, '__version__', 'unknown')}"


def _seeds_text(seeds: List[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1 else ",".join(map(str, seeds))


#: periodic checkpoints each trial keeps (model_step<N>.zip) for offline selection (`dqltoolkit select`: FQE)
KEEP = 20
#: FQE fitting steps `select` runs unless told (the table's FQE column so far; docs/results.md says why more are needed)
DEFAULT_FQE_STEPS = 20_000


@dataclass(frozen=True)
class Unit:
    """One run folder of the campaign: a trial's seeds together (the sweep's layout, ``trials/<trial>``) or, with
    ``--per-seed``, one of its seeds alone (``trials/<trial>_seed<k>``)."""

    trial: Any
    seeds: List[int]
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name


def units(spec, out: Path, per_seed: bool, only: Optional[str] = None) -> List[Unit]:
    """The campaign's runs in file order; ``only``: an agent, a task, a trial's or a run's name."""
    found = []
    for t in spec.grid_trials():
        runs = [Unit(t, [s], out / "trials" / f"{t.name}_seed{s}") for s in spec.seeds] if per_seed else \
            [Unit(t, list(spec.seeds), out / "trials" / t.name)]
        found += [u for u in runs if not only or only in (t.agent, t.task, t.name, u.name)]
    return found


def fresh_command(spec, unit: Unit) -> List[str]:
    """The `dqltoolkit train` command that trains the run from step 0 (what a record names as `command`)."""
    from dqltoolkit.sweep_spec import fixed_overrides

    trial, run_dir = unit.trial, unit.run_dir
    params = {**fixed_overrides(spec), **trial.params}
    cmd = ["dqltoolkit", "train", "--agent", trial.agent, "--env", trial.task, "--seeds", _seeds_text(unit.seeds),
           "--steps", str(spec.budget(trial.agent, trial.task))]
    for k, v in params.items():
        cmd += ["-p", f"{k}={v}"]
    return cmd + ["--save-every", str(spec.checkpoint_every()), "--keep-checkpoints", str(KEEP), "--out", str(run_dir)]


def _steps_in(run_dir: Path) -> int:
    from dqltoolkit.checkpoint import read_checkpoint

    best = 0
    for name in ("model_interrupted.zip", "model_latest.zip"):
        try:
            best = max(best, int(read_checkpoint(run_dir / name)[0].get("num_timesteps", 0)))
        except (OSError, ValueError):
            continue
    return best


def _book(run_dir: Path) -> Dict[str, Any]:
    try:
        return json.loads((run_dir / "campaign.json").read_text())
    except (OSError, ValueError):
        return {"chunks": []}


def _write_book(run_dir: Path, book: Dict[str, Any]) -> None:
    tmp = run_dir / "campaign.json.tmp"
    tmp.write_text(json.dumps(book, indent=1))
    tmp.replace(run_dir / "campaign.json")


def unit_state(spec, unit: Unit) -> tuple[str, Optional[Path]]:
    """("done" | "resume" | "new", checkpoint)."""
    from dqltoolkit.sweep_spec import complete_results, unfinished_checkpoint

    if complete_results(unit.run_dir, spec.budget(unit.trial.agent, unit.trial.task), unit.seeds) is not None:
        return "done", None
    ckpt = unfinished_checkpoint(unit.run_dir, unit.seeds)
    return ("resume", ckpt) if ckpt is not None else ("new", None)


def _stopper(minutes: float) -> Dict[str, Any]:
    """The campaign's deadline, and a flag its own SIGTERM or SIGINT sets (passed on to the running trial)."""
    stop: Dict[str, Any] = {"now": False, "deadline": time.monotonic() + minutes * 60}

    def on_signal(signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _over(stop: Dict[str, Any]) -> bool:
    return stop["now"] or time.monotonic() >= stop["deadline"]


def _chunk(name: str, state: str, cmd: List[str], run_dir: Path, book: Dict[str, Any], threads: int, stop: Dict[str, Any],
           budget: int, seeds: List[int]) -> int:
    """Run ``cmd`` (a ``dqltoolkit`` command line) in ``run_dir`` until it ends or the deadline (SIGTERM: it saves
    model_interrupted.zip); append the chunk to ``book``. 0: the run is complete, 3: it goes on later, 1: it failed."""
    from dqltoolkit.sweep_spec import complete_results

    cmd = [str(Path(sys.executable).with_name("dqltoolkit")), *cmd[1:], "--threads", str(threads), "--no-progress"]
    start_step = _steps_in(run_dir) if state == "resume" else 0
    print(f"[campaign] {name}: {state} at step {start_step} ({time.strftime('%H:%M:%S')})", flush=True)
    t0, started, code_at_start = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S"), code_version()
    with open(run_dir / "campaign.log", "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if _over(stop):
                proc.send_signal(signal.SIGTERM)  # saves model_interrupted.zip after the current step
                try:
                    proc.wait(timeout=600)
                except subprocess.TimeoutExpired:
                    proc.kill()
                break
            time.sleep(2)
    code = proc.wait()
    done = complete_results(run_dir, budget, seeds) is not None
    end_step = budget if done else _steps_in(run_dir)
    book["chunks"].append({"cpu": cpu_name(), "threads": threads, "started": started, "wall_s": round(time.monotonic() - t0, 1),
                           "from_step": start_step, "to_step": end_step, "exit": code, "code": code_at_start})
    _write_book(run_dir, book)
    print(f"[campaign] {name}: steps {start_step} -> {end_step}, exit {code}, {time.monotonic() - t0:.0f} s", flush=True)
    if code not in (0, 143, -signal.SIGTERM) and not done:
        print(f"[campaign] {name} failed: see {run_dir / 'campaign.log'}", flush=True)
        return 1
    return 0 if done else 3


def _resume_command(task: str, ckpt: Path, save_every: int, run_dir: Path) -> List[str]:
    return ["dqltoolkit", "train", "--env", task, "--resume", str(ckpt), "--save-every", str(save_every),
            "--keep-checkpoints", str(KEEP), "--out", str(run_dir), "--logger", "log"]


def run(spec, out: Path, minutes: float, threads: int, only: Optional[str], per_seed: bool = False,
        records: Optional[Path] = None) -> int:
    """Train runs until the deadline: started runs first, then new ones, each group in file order (a
    session that ends mid-run must not find the next session starting another run before finishing it);
    returns 0 when every run is done, 3 when time ran out. With ``records``, a new run whose data is not the
    data of the task's records there is refused before it trains (hours that `collect` would refuse)."""
    stop = _stopper(minutes)
    states = [(u, *unit_state(spec, u)) for u in units(spec, out, per_seed, only)]
    if records is not None and records.is_file():
        from dqltoolkit.report_records import read_records

        recorded = read_records(records)
        starting = {u.trial.task for u, state, _ in states if state == "new"}
        for task in sorted(starting & {r["task"] for r in recorded}):
            refuse_other_data("run", task, dataset_facts(task), recorded, records)
    for unit, state, ckpt in [x for x in states if x[1] == "resume"] + [x for x in states if x[1] == "new"]:
        if _over(stop):
            return 3
        unit.run_dir.mkdir(parents=True, exist_ok=True)
        book = _book(unit.run_dir)
        book["command"] = " ".join(fresh_command(spec, unit))
        if state == "new":
            cmd = fresh_command(spec, unit) + ["--logger", "log"]
        else:
            cmd = _resume_command(unit.trial.task, ckpt, spec.checkpoint_every(), unit.run_dir)
        result = _chunk(unit.name, state, cmd, unit.run_dir, book, threads, stop, spec.budget(unit.trial.agent, unit.trial.task), unit.seeds)
        if result:
            return result
    return 0


def finetune(spec, out: Path, minutes: float, threads: int, only: Optional[str], from_step: int, timesteps: int,
             eval_freq: int, per_seed: bool = False) -> int:
    """Online fine-tuning after the offline runs (issue 26's figure): each run's checkpoint at ``from_step``
    continues online for ``timesteps`` env steps per seed (one gradient step after each) in
    ``OUT/finetune/<run>_from<k>k``, in resumable chunks like ``run``; runs not trained that far wait."""
    from dqltoolkit.sweep_spec import complete_results, unfinished_checkpoint

    stop = _stopper(minutes)
    for unit in units(spec, out, per_seed, only):
        source = unit.run_dir / f"model_step{from_step}.zip"
        if not source.is_file():
            print(f"[campaign] {unit.name}: no model_step{from_step}.zip yet (train it first): skipped", flush=True)
            continue
        run_dir = out / "finetune" / f"{unit.name}_from{from_step // 1000}k"
        budget = from_step + timesteps
        if complete_results(run_dir, budget, unit.seeds) is not None:
            continue
        if _over(stop):
            return 3
        run_dir.mkdir(parents=True, exist_ok=True)
        book = _book(run_dir)
        fresh = ["dqltoolkit", "finetune", str(source), "--env", unit.trial.task, "--timesteps", str(timesteps), "--eval-freq", str(eval_freq),
                 "--save-every", str(eval_freq), "--out", str(run_dir)]
        book["command"] = " ".join(fresh)
        ckpt = unfinished_checkpoint(run_dir, unit.seeds)
        state, cmd = ("resume", _resume_command(unit.trial.task, ckpt, eval_freq, run_dir)) if ckpt is not None else ("new", fresh)
        result = _chunk(f"{unit.name} (fine-tune)", state, cmd, run_dir, book, threads, stop, budget, unit.seeds)
        if result:
            return result
    return 0


def ranked_as_asked(run_dir: Path, fqe_steps: int, checkpoints: Optional[List[int]], together: bool) -> bool:
    """Whether the run's selection.json was made with these FQE settings (a changed protocol ranks it again). A file
    from before selection.json recorded its settings was made by this runner's defaults (20,000 steps, every
    checkpoint, one fit each)."""
    try:
        doc = json.loads((run_dir / "selection.json").read_text())
    except (OSError, ValueError):
        return False
    settings = doc.get("fqe_settings", {"steps": DEFAULT_FQE_STEPS, "together": False})
    ranked = sorted(int(c) for c in doc.get("checkpoints", {}))
    return (int(settings.get("steps", -1)) == fqe_steps and bool(settings.get("together")) == together
            and (checkpoints is None or ranked == sorted(checkpoints)))


def select(spec, out: Path, minutes: float, threads: int, only: Optional[str], fqe_steps: int, per_seed: bool = False,
           checkpoints: Optional[List[int]] = None, together: bool = False) -> int:
    """Rank each finished run's kept checkpoints offline (`dqltoolkit select`: the BC-loss rule and FQE) into
    its selection.json, which `collect` carries into the records (the table's offline FQE column). FQE keeps
    its estimates per checkpoint (fqe_cache.json), so a chunk cut at the deadline loses one checkpoint at most
    (``together``: the whole fit). ``checkpoints``: rank these steps only."""
    deadline = time.monotonic() + minutes * 60
    extra = (["--checkpoints", ",".join(str(c) for c in checkpoints)] if checkpoints else []) + (["--fqe-together"] if together else [])
    for unit in units(spec, out, per_seed, only):
        if unit_state(spec, unit)[0] != "done" or ranked_as_asked(unit.run_dir, fqe_steps, checkpoints, together):
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return 3
        print(f"[campaign] {unit.name}: ranking its checkpoints offline (FQE)", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        try:
            done = subprocess.run(["dqltoolkit", "select", str(unit.run_dir), "--threads", str(threads), "--fqe-steps", str(fqe_steps),
                                   *extra], env=env, timeout=left)
        except subprocess.TimeoutExpired:  # the child is killed: the checkpoints it finished are in fqe_cache.json
            print(f"[campaign] {unit.name}: deadline; run `select` again to go on", flush=True)
            return 3
        if done.returncode:
            return done.returncode
    return 0


def status(spec, out: Path, records: Optional[Path] = None, per_seed: bool = False) -> None:
    """One line per run; a "new" run whose seeds already have records (trained on a machine whose folder is
    gone) says so, since `run` would train it again (needed only for what the records lack: checkpoints)."""
    from dqltoolkit.report_records import RecordError, read_records

    recorded: set = set()
    if records is not None and records.is_file():
        try:
            recorded = {(r["agent"], r["task"], r["seed"]) for r in read_records(records)}
        except RecordError as exc:  # the runs' own state does not depend on it
            print(f"(records not read: {exc})")
    for unit in units(spec, out, per_seed):
        trial, run_dir = unit.trial, unit.run_dir
        state, ckpt = unit_state(spec, unit)
        chunks = _book(run_dir)["chunks"]
        wall = sum(c["wall_s"] for c in chunks)
        budget = spec.budget(trial.agent, trial.task)
        at = budget if state == "done" else (_steps_in(run_dir) if ckpt else 0)
        done_steps = sum(max(0, c["to_step"] - c["from_step"]) for c in chunks)
        eta = f", about {(budget - at) / (done_steps / wall) / 3600:.1f} h to go at {done_steps / wall:.1f} steps/s" \
            if state != "done" and wall > 0 and done_steps > 0 else ""
        elsewhere = sum((trial.agent, trial.task, s) in recorded for s in unit.seeds) if state == "new" else 0
        kept = f" ({elsewhere} records in {records} from a folder not here)" if elsewhere else ""
        print(f"{unit.name:60s} {state:7s} {at:>8d} / {budget} steps, {wall / 3600:.2f} h{eta}{kept}")


def refuse_other_data(action: str, task: str, data: Dict[str, Any], others: List[Dict[str, Any]], records: Path) -> None:
    """One table, one dataset per task: a rebuild that came out different (another machine, another SAC run) must
    not be mixed with the records of the data it replaces."""
    other = sorted({r["dataset_sha256"] for r in others if r["task"] == task and r["dataset_sha256"] != data["sha256"]})
    if other:
        raise SystemExit(f"{action}: {task}'s data here (SHA-256 {data['sha256'][:16]}..., {data['transitions']} transitions) is not "
                         f"the data of records kept in {records} ({', '.join(d[:16] + '...' for d in other)}); a table must not mix "
                         "them: rebuild the dataset as recorded (docs/results/datasets.json) or retrain those runs here")


def dataset_facts(task_id: str) -> Dict[str, Any]:
    """Size, content digest and behaviour level of the data a task trains on."""
    from dqltoolkit.data.digest import table_sha256
    from dqltoolkit.tasks import get_task

    task = get_task(task_id)
    table = task.load_dataset()
    return {"transitions": len(table["rewards"]), "sha256": table_sha256(table), "score": behaviour_score(table, task)}


def behaviour_score(table, task) -> Optional[float]:
    """The data's own level: the mean return of its episodes (ends at terminals and timeouts), normalised."""
    import numpy as np

    timeouts = np.asarray(table.get("timeouts", np.zeros(len(table["terminals"]))))
    ends = np.flatnonzero((np.asarray(table["terminals"]) > 0) | (timeouts > 0))
    starts = np.concatenate([[0], ends[:-1] + 1])
    returns = [float(np.sum(table["rewards"][s : e + 1])) for s, e in zip(starts, ends)]
    score = task.normalized_score(float(np.mean(returns))) if returns else None
    return None if score is None else round(score, 2)


def collect(spec, out: Path, records: Path) -> None:
    """Every run's seeds as records (trial folders and per-seed folders alike), the dataset's size and digest from the
    data training reads (and each ranked run's selection.png as ``selection_<run>.png`` beside the records). Records
    already in ``records`` for runs this folder does not hold (trained on another machine, whose folder is
    gone) are kept as they are: a new machine adds to the table without erasing what it cannot rerun."""
    from dqltoolkit.report_records import curves_of_run, fqe_of_run, read_records, record_for, write_records

    datasets: Dict[str, Dict[str, Any]] = {}
    found: Dict[tuple, Dict[str, Any]] = {}
    for unit in units(spec, out, per_seed=False) + units(spec, out, per_seed=True):
        trial, run_dir = unit.trial, unit.run_dir
        if not (run_dir / "metrics.csv").is_file():
            continue
        if trial.task not in datasets:
            datasets[trial.task] = dataset_facts(trial.task)
        book = _book(run_dir)
        cpus = sorted({c["cpu"] for c in book["chunks"]}) or [cpu_name()]
        codes = list(dict.fromkeys(c.get("code", "unrecorded") for c in book["chunks"] if c["to_step"] > c["from_step"]))
        try:
            import yaml

            config = yaml.safe_load((run_dir / "config.yaml").read_text()).get("config")
        except (OSError, ValueError, AttributeError):
            config = None
        curves = curves_of_run(run_dir, unit.seeds)
        fqe = fqe_of_run(run_dir)
        if (run_dir / "selection.png").is_file():  # the offline picks' figure, beside the records it belongs to
            shutil.copyfile(run_dir / "selection.png", records.parent / f"selection_{unit.name}.png")
        for s in unit.seeds:
            if not curves[s]["evaluations"]:
                continue
            rec = record_for(run_dir, s, curves[s], agent=trial.agent, task=trial.task,
                             command=book.get("command") or " ".join(fresh_command(spec, unit)),
                             cpu=" + ".join(cpus), dataset=datasets[trial.task], config=config,
                             wall_s=sum(c["wall_s"] for c in book["chunks"]) or None, code=" + ".join(codes) or None,
                             fqe=fqe.get(s))
            key = (trial.agent, trial.task, s)
            if key in found:  # a seed trained in both layouts: the run that got further stands
                other = found[key]
                keep = rec if rec["evaluations"][-1][0] > other["evaluations"][-1][0] else other
                print(f"{trial.agent} {trial.task} seed {s}: two folders hold it; keeping the one whose command is "
                      f"`{keep['command']}` ({keep['evaluations'][-1][0]} steps)")
                rec = keep
            found[key] = rec
    before = {(r["agent"], r["task"], r["seed"]): r for r in (read_records(records) if records.is_file() else [])}
    for key, rec in found.items():  # a rerun under way here (for its checkpoints) must not replace the finished run it repeats
        prev = before.get(key)
        if prev is not None and prev["evaluations"][-1][0] > rec["evaluations"][-1][0]:
            print(f"{key[0]} {key[1]} seed {key[2]}: the record in {records} got further ({prev['evaluations'][-1][0]} steps) than the "
                  f"run here ({rec['evaluations'][-1][0]}); keeping the record")
            found[key] = prev
    rows = list(found.values())
    kept = [r for key, r in before.items() if key not in found]
    for task, data in datasets.items():
        refuse_other_data("collect", task, data, kept, records)
    write_records(kept + rows, records)
    print(f"wrote {records}: {len(rows)} records from {out}" + (f", {len(kept)} kept from the file for runs not here ("
          + ", ".join(sorted({f"{r['agent']} {r['task']}" for r in kept})) + ")" if kept else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("run", "finetune", "select", "status", "collect"))
    p.add_argument("sweep", type=Path, help="the campaign's sweep file (sweeps/results-hopper.yaml)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("DQLTOOLKIT_CAMPAIGN", Path.home() / "dqltoolkit-campaign")))
    p.add_argument("--minutes", type=float, default=60.0, help="run: stop (resumably) after this long")
    p.add_argument("--threads", type=int, default=2, help="run: torch threads of each trial (the machine's cores: one job at a time)")
    p.add_argument("--only", default=None, help="run, finetune, select: only runs of this agent, task, trial or run name")
    p.add_argument("--per-seed", action="store_true", help="run, finetune, select, status: each seed its own run "
                   "(trials/<trial>_seed<k>), short enough to finish in one session; collect reads both layouts")
    p.add_argument("--records", type=Path, default=Path("docs/results/runs.json"), help="collect: the record file to write; run: "
                   "new runs must train on the data of its records; status: "
                   "the records it names beside trials whose folder is not here")
    p.add_argument("--from-step", type=int, default=200_000, help="finetune: the offline checkpoint each fine-tune starts from")
    p.add_argument("--timesteps", type=int, default=50_000, help="finetune: env steps per seed online")
    p.add_argument("--fqe-steps", type=int, default=DEFAULT_FQE_STEPS, help="select: FQE fitting steps per checkpoint (2,000 leave "
                   "a hopper value far from converged: J near one step's reward; 20,000 still order its checkpoints against "
                   "their returns, 100,000 with them: docs/results.md)")
    p.add_argument("--fqe-checkpoints", default=None, help="select: rank only these steps (comma-separated)")
    p.add_argument("--fqe-together", action="store_true", help="select: fit FQE to a run's ranked checkpoints in one fit")
    p.add_argument("--eval-freq", type=int, default=5_000, help="finetune: steps between evaluations (and saves)")
    a = p.parse_args()
    from dqltoolkit.sweep_spec import load_sweep

    spec = load_sweep(a.sweep)
    out = a.out.expanduser() / spec.name
    if a.action == "run":
        sys.exit(run(spec, out, a.minutes, a.threads, a.only, a.per_seed, a.records))
    if a.action == "finetune":
        sys.exit(finetune(spec, out, a.minutes, a.threads, a.only, a.from_step, a.timesteps, a.eval_freq, a.per_seed))
    if a.action == "select":
        steps = [int(c) for c in a.fqe_checkpoints.split(",")] if a.fqe_checkpoints else None
        sys.exit(select(spec, out, a.minutes, a.threads, a.only, a.fqe_steps, a.per_seed, steps, a.fqe_together))
    if a.action == "status":
        status(spec, out, a.records, a.per_seed)
    else:
        collect(spec, out, a.records)


if __name__ == "__main__":
    main()
