"""The ``report`` job: run folders (or a sweep of them) -> a tidy CSV of every evaluation, markdown
tables of final and best scores with IQM and bootstrap intervals, a performance profile and learning curves.

A run folder (``dqltoolkit train``) holds ``config.yaml``, ``metrics.csv`` (periodic evaluations) and ``results.json``
(each seed's end-of-run evaluation). A broken or unfinished folder is *skipped*, not fatal, and listed with the file
and field at fault (``strict=True`` makes a skip an error), so one crashed trial does not lose a sweep's report. A
sweep's book (``sweep.json``, dqltoolkit/report_sweep.py) skips failed trials with their status and names algorithms
by the swept keys; a trial ASHA stopped early gives periodic evaluations but no final score (its last evaluation is
not at the budget). Statistics: dqltoolkit/stats.py; what each number means: docs/report.md.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from . import stats
from .limits import MAX_REPS, LimitError, check_limit
from .report_plots import Curve, plot_performance_profile, plot_report_curves
from .report_records import RecordError, curves_of_run, fqe_of_run, read_records
from .report_sweep import BOOK, REPORTED, TUNE_DIR, BookTrial, book_of, read_book
from .selection import bc_pick, final_score, top_k_for
from .tasks import get_task

#: what a run folder holds; one of :data:`RUN_MARKERS` makes a folder one (a ``config.yaml`` alone, such as a sweep's
#: own settings, is not a broken run)
RUN_FILES = ("config.yaml", "results.json", "metrics.csv")
RUN_MARKERS = ("results.json", "metrics.csv")
#: settings that do not change what an algorithm is (logging, evaluation, runtime): never part of its name
NOT_ALGORITHM_KEYS = frozenset({"log_every", "eval_freq", "eval_episodes", "cuda_graphs", "matmul_precision"})
#: tidy-CSV metric names of the evaluation fields the report reads (results.json / metrics.csv names)
METRICS = {"mean_return": "return", "normalized_score": "normalized_score"}
#: further per-seed fields of the end-of-run evaluation kept in the CSV where present (the bandit's mode share)
EXTRA_FINAL_METRICS = ("best_mode_share",)
EXTRA_TITLES = {"best_mode_share": "the share of 1,000 raw policy samples, no selection by Q, on the best reward mode"}
CSV_COLUMNS = ("run", "algorithm", "agent", "task", "seed", "step", "kind", "metric", "value")
#: the optimality gap's threshold on the normalised scale (100 = the expert reference)
GAP_GAMMA = 100.0
#: how the aggregate table names its two scores (markdown: the asterisk escaped)
SCORE_ROWS = {"final": "final", "best": "best\\*", "offline": "offline", "offline_fqe": "offline FQE"}
#: the row kinds of the offline rules, which pick an evaluation without looking at any return
OFFLINE_KINDS = ("offline", "offline_fqe")
OFFLINE_TITLES = {"offline": "the evaluation the offline BC-loss rule picks without any return (offline)",
                  "offline_fqe": "the evaluation at the checkpoint fitted Q evaluation values most (offline FQE)"}
METRIC_TITLES = {"normalized_score": "normalised score (D4RL scale: 0 random, 100 expert)",
                 "return": "episode return (the task has no normalised score)"}
#: the table cell of a score no run has (an algorithm whose every run was stopped early has no final score)
NO_SCORE = "—"
#: marks a count or a best* score that includes runs stopped early
STOPPED_MARK = "†"
STOPPED_FOOTNOTE = (f"{STOPPED_MARK} seeds of trials stopped early (ASHA) before their step budget: no final score (their last "
                    "evaluation is not at the budget, see Notes); their best\\* is over the evaluations before the stop.")
#: one evaluation: (seed, step, kind, metric, value)
Row = Tuple[int, int, str, str, float]


class ReportError(ValueError):
    """Nothing to report (no run folders, or every one skipped) or a run refused under ``strict``."""


class RunSkipped(Exception):
    """A folder that cannot be reported; the message names the file and the field."""


@dataclass
class Run:
    """One run folder: its seeds' evaluations as tidy rows (``seed, step, kind, metric, value``)."""

    path: Path
    agent: str
    task: str
    config: Dict[str, Any]
    seeds: List[int]
    total_steps: int
    rows: List[Row] = field(default_factory=list)
    label: str = ""
    algorithm: str = ""
    #: who stopped the run before its budget ("asha"), "" for a run that reached its end
    stopped_by: str = ""
    budget: Optional[int] = None
    #: the keys its sweep varied (from sweep.json): always part of the algorithm's name
    swept: Tuple[str, ...] = ()
    #: where its ``final`` score comes from: the end-of-run evaluation of a run folder, or a record's last three
    final_rule: str = "end"
    #: per seed, FQE's value of each kept checkpoint ``[[step, J], ...]`` (``dqltoolkit select``), where it was ranked
    fqe: Dict[int, List[List[float]]] = field(default_factory=dict)


@dataclass
class ReportResult:
    out: Path
    markdown: str
    files: List[Path]
    runs: List[Run]
    skipped: List[Tuple[Path, str]]


# ---------------------------------------------------------------------------------------------- finding and reading


def find_run_dirs(paths: Sequence[Path | str]) -> List[Path]:
    """Run folders among and below ``paths`` (not inside one); a :class:`ReportError` names missing paths, or all if none."""
    return _walk(paths)[0]


def _walk(paths: Sequence[Path | str]) -> Tuple[List[Path], List[Path]]:
    """Run folders (:func:`find_run_dirs`) and sweep folders (``sweep.json``, not their ``tune/``) under ``paths``, resolved."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportError("no paths given: name run folders or a sweep folder")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ReportError(f"no such folder: {', '.join(missing)}")
    found: List[Path] = []
    sweeps: List[Path] = []
    for root in paths:
        if root.is_file():
            raise ReportError(f"{root} is a file: name the run folder that holds it (or a folder above it)")
        for here, dirs, files in os.walk(root):
            if any(f in files for f in RUN_MARKERS):
                found.append(Path(here))
                dirs.clear()
                continue
            if BOOK in files:
                sweeps.append(Path(here))
                dirs[:] = [d for d in dirs if d != TUNE_DIR]
            dirs.sort()
    if not found:
        raise ReportError(f"no run folders (a folder with {' and '.join(RUN_FILES)}, as `dqltoolkit train` writes; found by its "
                          f"{' or '.join(RUN_MARKERS)}) under: " + ", ".join(str(p) for p in paths))
    return list(dict.fromkeys(p.resolve() for p in found)), list(dict.fromkeys(p.resolve() for p in sweeps))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunSkipped(f"{where} is {value!r}, not a finite number")
    return float(value)


def _read_config(path: Path) -> Dict[str, Any]:
    file = path / "config.yaml"
    if not file.is_file():
        raise RunSkipped(f"{file}: missing")
    try:
        doc = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise RunSkipped(f"{file}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise RunSkipped(f"{file}: expected a mapping of keys, found {type(doc).__name__}")
    for key in ("env", "seeds", "config"):
        if key not in doc:
            raise RunSkipped(f"{file}: no field '{key}'")
    if not isinstance(doc["config"], dict):
        raise RunSkipped(f"{file}: field 'config' is not a mapping")
    if not isinstance(doc["seeds"], list) or not doc["seeds"] or not all(isinstance(s, int) and not isinstance(s, bool) for s in doc["seeds"]):
        raise RunSkipped(f"{file}: field 'seeds' is {doc['seeds']!r}, not a list of integers")
    return doc


def _read_results(path: Path, seeds: List[int]) -> Tuple[int, List[Row], Dict[str, Any]]:
    """``total_steps``, the end-of-run rows of ``results.json``, and ``{"by", "budget"}`` of a run stopped early (no rows)."""
    file = path / "results.json"
    if not file.is_file():
        unfinished = [n for n in ("model_interrupted.zip", "model_latest.zip", "model_diverged.zip") if (path / n).exists()]
        why = f" ({', '.join(unfinished)} is there)" if unfinished else ""
        raise RunSkipped(f"{file}: missing, so the run did not finish{why}")
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise RunSkipped(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RunSkipped(f"{file}: expected a JSON object")
    if "total_steps" not in doc:
        raise RunSkipped(f"{file}: no field 'total_steps'")
    total = int(_number(doc["total_steps"], f"{file}: field 'total_steps'"))
    if doc.get("stopped_early") is True:
        budget = doc.get("budget")
        budget = None if budget is None else int(_number(budget, f"{file}: field 'budget'"))
        return total, [], {"by": str(doc.get("stopped_by") or "a scheduler"), "budget": budget}
    evaluation = doc.get("evaluation")
    if evaluation is None:
        raise RunSkipped(f"{file}: no field 'evaluation' (the run was not evaluated: a task without an evaluation environment?)")
    if not isinstance(evaluation, list) or not evaluation:
        raise RunSkipped(f"{file}: field 'evaluation' is {evaluation!r}, not a list with one entry per seed")
    rows = []
    for i, entry in enumerate(evaluation):
        where = f"{file}: field 'evaluation[{i}]"
        if not isinstance(entry, dict):
            raise RunSkipped(f"{where}' is not an object")
        for key in ("seed", "mean_return"):
            if key not in entry:
                raise RunSkipped(f"{where}.{key}' is missing")
        seed = int(_number(entry["seed"], f"{where}.seed'"))
        if seed not in seeds:
            raise RunSkipped(f"{where}.seed' is {seed}, not one of config.yaml's seeds {seeds}")
        rows += [(seed, total, "final", metric, _number(entry[key], f"{where}.{key}'"))
                 for key, metric in [*METRICS.items(), *zip(EXTRA_FINAL_METRICS, EXTRA_FINAL_METRICS)] if key in entry]
    kinds = {tuple(sorted(k for k in METRICS if k in e)) for e in evaluation}
    if len(kinds) > 1:
        raise RunSkipped(f"{file}: the entries of field 'evaluation' do not all have the same scores ({sorted(kinds)})")
    missing = sorted(set(seeds) - {r[0] for r in rows})
    if missing:
        raise RunSkipped(f"{file}: field 'evaluation' has no entry for seed(s) {missing} of config.yaml's seeds {seeds}")
    return total, rows, {}


def _read_metrics(path: Path, seeds: List[int]) -> List[Row]:
    """The periodic evaluation rows of ``metrics.csv`` (SB3's CSV: sparse rows, ``time/step`` on each)."""
    file = path / "metrics.csv"
    if not file.is_file():
        raise RunSkipped(f"{file}: missing")
    try:
        with open(file, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            table = list(reader)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise RunSkipped(f"{file}: not a readable CSV ({exc})") from None
    names = {(s, metric): f"eval/{key}_seed{s}" if len(seeds) > 1 else f"eval/{key}"
             for key, metric in METRICS.items() for s in seeds}
    columns = {k: name for k, name in names.items() if name in header}
    if columns and "time/step" not in header:
        raise RunSkipped(f"{file}: no column 'time/step' beside its evaluation columns")
    rows = []
    for line, record in enumerate(table, start=2):
        for (seed, metric), name in columns.items():
            cell = record.get(name)
            if cell in ("", None):
                continue
            try:
                value, step = float(cell), float(record["time/step"])
            except (TypeError, ValueError):
                raise RunSkipped(f"{file}: line {line}, column '{name}' or 'time/step' is not a number "
                                 f"({cell!r}, {record.get('time/step')!r})") from None
            if not math.isfinite(value):
                raise RunSkipped(f"{file}: line {line}, column '{name}' is {cell}, not a finite number")
            rows.append((seed, int(step), "periodic", metric, value))
    return rows


def load_run(path: Path) -> Run:
    """Read one run folder; raises :class:`RunSkipped` (naming the file and field) if it cannot be reported."""
    path = Path(path)
    doc = _read_config(path)
    seeds = [int(s) for s in doc["seeds"]]
    total, final, stopped = _read_results(path, seeds)
    periodic = _read_metrics(path, seeds)
    if stopped and not periodic:
        raise RunSkipped(f"{path / 'results.json'}: stopped early (by {stopped['by']}) at step {total}, and {path / 'metrics.csv'} "
                         "holds no periodic evaluation to report")
    cfg = doc["config"]
    agent = doc.get("agent") or doc.get("init") or f"{cfg.get('head', '?')}+{cfg.get('objective', '?')}"
    agent = Path(str(agent)).stem if str(agent).endswith((".yaml", ".yml", ".zip")) else str(agent)
    fqe = fqe_of_run(path)
    offline = [] if stopped else _offline_rows(path, seeds, periodic, str(doc["env"]), fqe)  # (a stopped run picks among fewer)
    return Run(path=path, agent=agent, task=str(doc["env"]), config=cfg, seeds=seeds, total_steps=total, rows=sorted(periodic) + final + offline,
               stopped_by=stopped.get("by", ""), budget=stopped.get("budget"), fqe=fqe)


def _recipe_section(task: str) -> str:
    try:
        return get_task(task).recipe_section or task
    except (ValueError, KeyError):
        return task


def _offline_rows(path: Path, seeds: List[int], periodic: List[Row], task: str, fqe: Dict[int, List[List[float]]]) -> List[Row]:
    """The offline rules' picks (:func:`_picks`) from the run's logged per-seed BC loss and its ``selection.json``."""
    if not periodic:
        return []
    try:
        bc = {s: curves["bc_loss"] for s, curves in curves_of_run(path, seeds).items()}
    except (OSError, ValueError, csv.Error):
        bc = {}
    return _picks(seeds, periodic, bc, fqe, task)


def _picks(seeds: Sequence[int], periodic: List[Row], bc_loss: Dict[int, List[List[float]]], fqe: Dict[int, List[List[float]]],
           task: str) -> List[Row]:
    """Per metric and seed, the periodic evaluation the BC-loss rule picks (dqltoolkit/selection.py), then FQE's: the
    one at the kept checkpoint with the highest FQE value (``dqltoolkit select``), among the steps that have both."""
    bc_rows, fqe_rows = [], []
    for metric in METRICS.values():
        for s in seeds:
            mine = [(st, v) for (seed, st, kind, m, v) in periodic if seed == s and m == metric and kind == "periodic"]
            curve, at = sorted(mine), dict(mine)
            if curve and bc_loss.get(s):
                try:
                    i = bc_pick(curve, bc_loss[s], top_k_for(_recipe_section(task)))
                    bc_rows.append((s, curve[i][0], "offline", metric, curve[i][1]))
                except ValueError:
                    pass
            valued = [(j, st) for st, j in fqe.get(s, []) if st in at]
            if valued:
                fqe_rows.append((s, max(valued)[1], "offline_fqe", metric, at[max(valued)[1]]))
    return bc_rows + fqe_rows


def cut_records(records: List[Dict[str, Any]], at_step: Union[int, str], notes: List[str]) -> List[Dict[str, Any]]:
    """Every record as it stood at step ``at_step``, or ``"common"``: the last step every record of its task has evaluated;
    a record without an evaluation there is left out (said in ``notes``), as it would be compared at a smaller budget."""
    last = {t: min(r["evaluations"][-1][0] for r in records if r["task"] == t) for t in {r["task"] for r in records}}
    cut = []
    for rec in records:
        n = last[rec["task"]] if at_step == "common" else int(at_step)
        if not any(step == n for step, _ in rec["evaluations"]):
            notes.append(f"{rec['task']} {rec['agent']} seed {rec['seed']}: no evaluation at step {n:,} "
                         f"(last {rec['evaluations'][-1][0]:,}): left out of the tables cut at {n:,}")
            continue
        cut.append({**rec, **{k: [x for x in rec.get(k, []) if x[0] <= n] for k in ("evaluations", "bc_loss", "fqe")},
                    "steps_done": n})
    if at_step == "common":
        notes.extend(f"{task}: every run cut at step {n:,}, the last step all its runs have evaluated"
                     for task, n in sorted(last.items()))
    return cut


def runs_from_records(path: Path, at_step: Union[int, str, None] = None, notes: Optional[List[str]] = None) -> List[Run]:
    """One :class:`Run` per record of a results record file, ``final`` the mean of its last three evaluations."""
    try:
        records = read_records(path)
    except RecordError as exc:
        raise ReportError(str(exc)) from None
    if at_step is not None:
        records = cut_records(records, at_step, notes if notes is not None else [])
    runs = []
    for rec in records:
        s, metric = rec["seed"], ("return" if rec.get("metric") == "return" else "normalized_score")
        periodic = [(s, st, "periodic", metric, v) for st, v in rec["evaluations"]]
        last = rec["evaluations"][-1][0]
        final = [(s, last, "final", metric, final_score(rec["evaluations"]))]
        offline = _picks([s], periodic, {s: rec["bc_loss"]}, {s: rec.get("fqe", [])}, rec["task"])
        where = path.parent / rec["task"] / rec["agent"] / f"seed{s}"
        runs.append(Run(path=where, agent=rec["agent"], task=rec["task"], config=dict(rec.get("config") or {}), seeds=[s],
                        total_steps=int(rec.get("steps_done", last)), rows=periodic + final + offline, final_rule="last3",
                        fqe={s: rec["fqe"]} if rec.get("fqe") else {}))
    return runs


def _books(run_dirs: List[Path], sweeps: List[Path]) -> Tuple[Dict[Path, BookTrial], List[BookTrial], List[Tuple[Path, str]]]:
    """The sweep book entry of each run folder, the sweeps' trials that have no run folder, and the books not read."""
    by_dir: Dict[Path, BookTrial] = {}
    unread: List[Tuple[Path, str]] = []
    for folder in dict.fromkeys(sweeps + [b.resolve() for b in map(book_of, run_dirs) if b is not None]):
        trials, why = read_book(folder)
        if why:
            unread.append((folder / BOOK, why))
        by_dir.update((t.run_dir, t) for t in trials)
    known = set(run_dirs)
    orphans = [t for t in by_dir.values() if t.run_dir not in known and t.book.parent in sweeps]
    return by_dir, orphans, unread


def gather(paths: Sequence[Path | str], strict: bool = False, notes: Optional[List[str]] = None,
           at_step: Union[int, str, None] = None) -> Tuple[List[Run], List[Tuple[Path, str]]]:
    """Every reportable run under ``paths`` and the (folder, reason) of each skipped one (broken, or a sweep trial whose
    status is not :data:`REPORTED`); an unreadable ``sweep.json`` goes to ``notes``. ``at_step``: :func:`cut_records`."""
    records = [Path(p) for p in paths if Path(p).is_file() and Path(p).suffix == ".json"]
    paths = [p for p in paths if Path(p) not in records]
    if at_step is not None and paths:
        raise ReportError("--at-step cuts results records (runs.json) only; a run folder's final score is its end-of-run evaluation")
    run_dirs, sweeps = _walk(paths) if paths or not records else ([], [])
    by_dir, orphans, unread = _books(run_dirs, sweeps)
    runs: List[Run] = []
    skipped: List[Tuple[Path, str]] = []

    def skip(d: Path, why: str) -> None:
        if strict:
            raise ReportError(f"{d}: {why} (without --strict it would be skipped)")
        skipped.append((d, why))

    if notes is not None:
        notes.extend(why for _, why in unread)
    for d in run_dirs:
        trial = by_dir.get(d)
        if trial is not None and trial.status not in REPORTED:
            skip(d, trial.skip_reason())
            continue
        try:
            run = load_run(d)
        except RunSkipped as exc:
            skip(d, str(exc))
            continue
        if trial is not None:
            run.swept = tuple(sorted(trial.params))
        runs.append(run)
    runs += [r for f in records for r in runs_from_records(f, at_step, notes)]
    for t in orphans:
        skip(t.run_dir, t.skip_reason() + ("; no run folder" if t.status not in REPORTED else "; its run folder is missing"))
    if not runs:
        raise ReportError("every run folder was skipped:\n" + "\n".join(f"  {d}: {why}" for d, why in skipped) if paths
                          else f"no records in {', '.join(map(str, records))}")
    _name(runs)
    return runs, skipped


# ---------------------------------------------------------------------------------------------- naming


def algorithm_order(name: str) -> Tuple[Any, ...]:
    """Sort key that reads the numbers in a name as numbers (``eta=2.5`` before ``eta=10``)."""
    parts = re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", name)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def _value_text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _name(runs: List[Run]) -> None:
    """Label each run by its folder (relative to the runs' common parent) and name its algorithm: the agent plus every
    setting that differs between its runs on one task (one per ``-p eta=...`` value) and every key a sweep varied."""
    base = Path(os.path.commonpath([str(r.path.parent) for r in runs])) if len(runs) > 1 else runs[0].path.parent
    for r in runs:
        r.label = r.path.relative_to(base).as_posix()
    varying: Dict[str, set] = {}
    groups: Dict[Tuple[str, str], List[Run]] = {}
    for r in runs:
        groups.setdefault((r.agent, r.task), []).append(r)
    for (agent, _), group in groups.items():
        keys = set().union(*(g.config for g in group)) - NOT_ALGORITHM_KEYS
        varying.setdefault(agent, set()).update(k for k in keys if len({repr(g.config.get(k)) for g in group}) > 1)
        varying[agent].update(k for g in group for k in g.swept if k not in NOT_ALGORITHM_KEYS)
    for r in runs:
        keys = sorted(varying.get(r.agent, ()))
        r.algorithm = " ".join([r.agent] + [f"{k}={_value_text(r.config.get(k))}" for k in keys])


# ---------------------------------------------------------------------------------------------- tables


def write_csv(runs: Sequence[Run], path: Path) -> Path:
    """``evaluations.csv``: one row per (run, seed, step, kind, metric)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerows((r.label, r.algorithm, r.agent, r.task, *row) for r in runs for row in r.rows)
    return path


def task_metric(runs: Sequence[Run], task: str) -> str:
    """``normalized_score`` where every run of ``task`` that reached its end has one there, else ``return`` (runs stopped
    early have no end-of-run rows and decide it only when every run was stopped)."""
    finals = [{m for (_, _, kind, m, _) in r.rows if kind == "final"} for r in runs if r.task == task and not r.stopped_by]
    if not finals:  # every run stopped early: their evaluations decide
        finals = [{m for (_, _, _, m, _) in r.rows} for r in runs if r.task == task]
    return "normalized_score" if finals and all("normalized_score" in f for f in finals) else "return"


def _curves(runs: Sequence[Run], task: str, metric: str, kind: str) -> Dict[str, Dict[int, List[float]]]:
    """Algorithm -> step -> the values of ``metric`` in the ``kind`` rows of its runs of ``task``, in run order."""
    out: Dict[str, Dict[int, List[float]]] = {}
    for r in runs:
        if r.task == task:
            for (_, step, k, m, v) in r.rows:
                if k == kind and m == metric:
                    out.setdefault(r.algorithm, {}).setdefault(step, []).append(v)
    return out


@dataclass
class SeedScores:
    """Per-seed final and best (the highest of its evaluations) scores of one algorithm on one task; ``best`` also holds
    the seeds of runs stopped early (``stopped`` of them, the last ones), which have no final score."""

    final: np.ndarray
    best: np.ndarray
    runs: List[str]
    stopped: int = 0
    offline: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the BC-loss rule's picks (runs that logged a BC loss)
    offline_fqe: np.ndarray = field(default_factory=lambda: np.zeros(0))  # FQE's picks (runs ranked by ``dqltoolkit select``)


def seed_scores(runs: Sequence[Run]) -> Dict[str, Dict[str, SeedScores]]:
    """task -> algorithm -> per-seed scores on the task's metric (see :func:`task_metric`)."""
    out: Dict[str, Dict[str, SeedScores]] = {}
    for task in sorted({r.task for r in runs}):
        metric = task_metric(runs, task)
        by_alg: Dict[str, Tuple[List[float], List[float], List[str], List[float], List[float], List[float]]] = {}
        for r in sorted((r for r in runs if r.task == task), key=lambda r: bool(r.stopped_by)):  # finished runs first
            final, best, labels, stopped, offline, fqe = by_alg.setdefault(r.algorithm, ([], [], [], [], [], []))
            for s in r.seeds:
                values = [(kind, v) for (seed, _, kind, m, v) in r.rows if seed == s and m == metric]
                if r.stopped_by:
                    if not values:  # stopped before its first evaluation: nothing to score
                        continue
                    stopped.append(max(v for _, v in values))
                else:
                    final.append(next(v for kind, v in values if kind == "final"))
                    best.append(max(v for kind, v in values if kind not in OFFLINE_KINDS))
                    offline.extend(v for kind, v in values if kind == "offline")
                    fqe.extend(v for kind, v in values if kind == "offline_fqe")
                labels.append(f"{r.label}#seed{s}")
        out[task] = {a: SeedScores(np.array(f), np.array(b + st), lab, len(st), np.array(off), np.array(fq))
                     for a, (f, b, lab, st, off, fq) in sorted(by_alg.items(), key=lambda kv: algorithm_order(kv[0]))}
    return out


def _fmt(x: float) -> str:
    a = abs(float(x))
    return f"{x:.1f}" if a >= 100 else f"{x:.2f}" if a >= 10 else f"{x:.3f}"


def _cells(per_task: Sequence[np.ndarray], fns: Sequence[Callable], reps: int, seed: int, mark: str = "") -> List[str]:
    """One cell per estimator over the non-empty arrays of ``per_task``, or :data:`NO_SCORE` if none."""
    have = [x for x in per_task if len(x)]
    estimates = [stats.stratified_bootstrap(have, fn, reps, seed) for fn in fns] if have else []
    return [f"{_fmt(e.point)} [{_fmt(e.lower)}, {_fmt(e.upper)}]{mark}" for e in estimates] or [NO_SCORE] * len(fns)


def _coverage(sc: SeedScores, kind: str) -> str:
    """`` (2 of 3 seeds)`` for an offline rule that scored only some of the seeds (FQE ranked some runs so far): the
    table's seed column counts the finished seeds, and a mean over fewer must not pass for a mean over all."""
    n, m = len(getattr(sc, kind)), len(sc.final)
    return f" ({n} of {m} seeds)" if kind in OFFLINE_KINDS and 0 < n < m else ""


def task_tables(scores: Dict[str, Dict[str, SeedScores]], runs: Sequence[Run], reps: int, seed: int) -> List[str]:
    """Markdown lines: one table per task of final and best scores, mean and IQM with their intervals."""
    lines: List[str] = []
    for task, algs in scores.items():
        when = ("the mean of the last three evaluations" if all(r.final_rule == "last3" for r in runs if r.task == task)
                else "at the end of training")
        rules = [k for k in OFFLINE_KINDS if any(len(getattr(sc, k)) for sc in algs.values())]
        kinds = ("final", "best", *rules)
        lines += [f"### {task}", "", f"Score: {METRIC_TITLES[task_metric(runs, task)]}, {when} (final), the best of each seed's "
                  "evaluations (best\\*)" + "".join(f", {OFFLINE_TITLES[k]}" for k in rules) + ".", "",
                  "| algorithm | seeds |" + "".join(f" {SCORE_ROWS[k]}: mean [95% CI] | {SCORE_ROWS[k]}: IQM [95% CI] |"
                                                  for k in kinds),
                  "|---|---:|" + "---|---|" * len(kinds)]
        for alg, sc in algs.items():
            cells = [c for k in kinds for c in _cells([getattr(sc, k)], (stats.aggregate_mean, stats.iqm), reps, seed,
                                                      STOPPED_MARK if k == "best" and sc.stopped else _coverage(sc, k))]
            seeds = f"{len(sc.final)} + {sc.stopped}{STOPPED_MARK}" if sc.stopped else str(len(sc.final))
            lines.append(f"| {alg} | {seeds} | " + " | ".join(cells) + " |")
        if any(sc.stopped for sc in algs.values()):
            lines += ["", STOPPED_FOOTNOTE]
        lines.append("")
        mine = [r for r in runs if r.task == task and not r.stopped_by]
        for extra in EXTRA_FINAL_METRICS:
            if not all(any(kind == "final" and m == extra for (_, _, kind, m, _) in r.rows) for r in mine):
                continue
            lines += [f"End of training, `{extra}` ({EXTRA_TITLES.get(extra, extra)}):", "",
                      f"| algorithm | seeds | {extra}: mean [95% CI] | {extra}: IQM [95% CI] |", "|---|---:|---|---|"]
            for alg in algs:
                values = np.array([v for r in mine if r.algorithm == alg for (_, _, kind, m, v) in r.rows if kind == "final" and m == extra])
                if len(values):
                    cells = _cells([values], (stats.aggregate_mean, stats.iqm), reps, seed)
                    lines.append(f"| {alg} | {len(values)} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _mean_text(values: List[float]) -> str:
    finite = [v for v in values if not np.isnan(v)]
    return f"{np.mean(finite):+.2f}" if finite else NO_SCORE


def fqe_order_table(runs: Sequence[Run]) -> List[str]:
    """Markdown lines: per task and algorithm ranked by FQE, Spearman's rank correlation of FQE's values with the online
    evaluations at the same checkpoints, per seed. The FQE column's pick is one checkpoint per seed; this says whether FQE
    orders the run's checkpoints as the returns do at all, which the pick alone cannot."""
    lines: List[str] = []
    for task in sorted({r.task for r in runs}):
        metric, per_alg = task_metric(runs, task), {}
        for r in (r for r in runs if r.task == task and r.fqe):
            for s, values in sorted(r.fqe.items()):
                online = {st: v for (seed, st, kind, m, v) in r.rows if seed == s and kind == "periodic" and m == metric}
                pairs = [(j, online[st]) for st, j in values if st in online]
                if len(pairs) > 1:
                    per_alg.setdefault(r.algorithm, []).append((s, len(pairs), stats.spearman(*zip(*pairs))))
        if per_alg:
            lines += [f"### {task}: how FQE orders the checkpoints", "", "Spearman's rank correlation of FQE's value with the online "
                      "evaluation over each seed's ranked checkpoints (1: the same order; 0: none; NaN: a constant side).", "",
                      "| algorithm | seeds | checkpoints | per seed | mean |", "|---|---:|---:|---|---:|"]
            for alg in sorted(per_alg, key=algorithm_order):
                got = per_alg[alg]
                lines.append(f"| {alg} | {len(got)} | {'/'.join(str(n) for _, n, _ in got)} | "
                             + ", ".join(f"seed {s}: {rho:+.2f}" for s, _, rho in got) + f" | {_mean_text([r for *_, r in got])} |")
            lines.append("")
    return lines


def curve_tables(runs: Sequence[Run], most: int = 24) -> List[str]:
    """Markdown lines: per task, each algorithm's mean periodic evaluation at each step (the latest ``most`` steps)."""
    lines: List[str] = []
    for task in sorted({r.task for r in runs}):
        per = _curves(runs, task, task_metric(runs, task), "periodic")
        steps = sorted({st for curve in per.values() for st in curve})[-most:]
        if not steps:
            continue
        head = [f"{st // 1000}k" if st % 1000 == 0 else str(st) for st in steps]
        lines += [f"### {task}: evaluations by step", "", "Mean over the seeds evaluated at that step (their number in brackets where fewer "
                  "than the algorithm's runs).", "", "| algorithm | " + " | ".join(head) + " |", "|---|" + "---:|" * len(steps)]
        for alg in sorted(per, key=algorithm_order):
            full = max(len(v) for v in per[alg].values())
            cells = [("" if st not in per[alg] else _fmt(float(np.mean(per[alg][st])))
                      + ("" if len(per[alg][st]) == full else f" ({len(per[alg][st])})")) for st in steps]
            lines.append(f"| {alg} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def aggregate_scope(scores: Dict[str, Dict[str, SeedScores]], runs: Sequence[Run]) -> Tuple[List[str], str, List[str]]:
    """The tasks the aggregate and the profile pool (their scores must share a scale), their metric, and notes on the rest."""
    tasks = list(scores)
    normalised = [t for t in tasks if task_metric(runs, t) == "normalized_score"]
    if len(normalised) == len(tasks):
        return tasks, "normalized_score", []
    if len(tasks) == 1:
        return tasks, "return", []
    left = [t for t in tasks if t not in normalised]
    note = f"tasks without a normalised score are not pooled (their returns have no common scale): {', '.join(left)}"
    return normalised, "normalized_score", [note]


def aggregate_table(scores: Dict[str, Dict[str, SeedScores]], tasks: Sequence[str], metric: str, reps: int, seed: int) -> List[str]:
    """Markdown lines: IQM, mean, median and optimality gap over ``tasks`` per algorithm, final and best."""
    gap = metric == "normalized_score"
    lines = ["| algorithm | tasks | runs | score | IQM [95% CI] | mean [95% CI] | median [95% CI] | optimality gap [95% CI] |",
             "|---|---:|---:|---|---|---|---|---|"]
    for alg in sorted({a for t in tasks for a in scores[t]}, key=algorithm_order):
        have = [t for t in tasks if alg in scores[t]]
        stopped = sum(scores[t][alg].stopped for t in have)
        for which in ("final", "best") + OFFLINE_KINDS:
            per_task = [getattr(scores[t][alg], which) for t in have]
            if which in OFFLINE_KINDS and not any(len(x) for x in per_task):
                continue
            mark = STOPPED_MARK if which == "best" and stopped else ""
            cells = _cells(per_task, (stats.iqm, stats.aggregate_mean, stats.aggregate_median), reps, seed, mark)
            cells += _cells(per_task, (lambda s: stats.optimality_gap(s, GAP_GAMMA),), reps, seed, mark) if gap else ["n/a"]
            count = sum(len(x) for x in per_task)
            count_text = f"{count - stopped} + {stopped}{STOPPED_MARK}" if mark else str(count)
            # an offline rule may have scored some tasks only: say so (final and best count the algorithm's tasks, a
            # task whose trials all stopped early included: its row says 0 runs and the stopped mark explains why)
            covered = sum(1 for x in per_task if len(x)) if which in OFFLINE_KINDS else len(have)
            lines.append(f"| {alg} | {covered} of {len(tasks)} | {count_text} | {SCORE_ROWS[which]} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------------------------------- figures' data


def profile_data(scores: Dict[str, Dict[str, SeedScores]], tasks: Sequence[str], reps: int, seed: int, points: int = 101):
    """Taus and, per algorithm with a final score, the distribution of its final scores over them with its interval."""
    pooled = np.concatenate([s.final for t in tasks for s in scores[t].values()])
    lo, hi = float(pooled.min()), float(pooled.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
    taus = np.linspace(lo - pad, hi + pad, points)
    per_alg = {alg: [scores[t][alg].final for t in tasks if alg in scores[t] and len(scores[t][alg].final)]
               for alg in sorted({a for t in tasks for a in scores[t]}, key=algorithm_order)}
    return taus, {alg: stats.stratified_bootstrap(per_task, lambda s: stats.score_distribution(s, taus), reps, seed)
                  for alg, per_task in per_alg.items() if per_task}


def curve_data(runs: Sequence[Run], reps: int, seed: int) -> Dict[str, Dict[str, Curve]]:
    """task -> algorithm -> its curve: the mean over seeds of the periodic evaluations (else the final one) with its
    interval, and how many seeds it has (the most at any step)."""
    out: Dict[str, Dict[str, Curve]] = {}
    for task in sorted({r.task for r in runs}):
        metric = task_metric(runs, task)
        periodic, final = _curves(runs, task, metric, "periodic"), _curves(runs, task, metric, "final")
        out[task] = {}
        for alg in sorted(dict.fromkeys(r.algorithm for r in runs if r.task == task), key=algorithm_order):
            at = periodic.get(alg) or final.get(alg, {})
            ests = [stats.stratified_bootstrap([np.array(at[st])], stats.aggregate_mean, reps, seed) for st in sorted(at)]
            band = np.array([[e.point, e.lower, e.upper] for e in ests]).reshape(-1, 3).T
            out[task][alg] = Curve(np.array(sorted(at)), stats.Estimate(*band), alg in periodic,
                                   max(map(len, at.values()), default=0))
    return out


# ---------------------------------------------------------------------------------------------- the job


def _notes(runs: Sequence[Run]) -> List[str]:
    """Notes on each run stopped before its budget (with its last evaluation) and on each seed counted twice."""
    notes = []
    for r in (r for r in runs if r.stopped_by):
        metric = task_metric(runs, r.task)
        last_step = max(st for (_, st, kind, m, _) in r.rows if m == metric and kind not in OFFLINE_KINDS)
        last = [v for (_, st, kind, m, v) in r.rows if m == metric and st == last_step and kind not in OFFLINE_KINDS]
        budget = f" of its {r.budget}" if r.budget else ""
        notes.append(f"stopped early by {r.stopped_by.upper() if r.stopped_by == 'asha' else r.stopped_by}: {r.algorithm} on {r.task} "
                     f"({r.label}) at step {r.total_steps}{budget}; last evaluation (step {last_step}): {metric.replace('_', ' ')} "
                     f"{_fmt(float(np.mean(last)))} (mean of {len(last)} seed(s)). Not in the final statistics; in best\\* and "
                     f"the learning curves ({STOPPED_MARK}).")
    seen: Dict[Tuple[str, str, int], str] = {}
    for r in runs:
        for s in r.seeds:
            key = (r.algorithm, r.task, s)
            if key in seen:
                notes.append(f"{r.algorithm} on {r.task}: seed {s} appears in both {seen[key]} and {r.label} (both are counted)")
            seen[key] = r.label
    return notes


def _steps_text(r: Run) -> str:
    if not r.stopped_by:
        return str(r.total_steps)
    return f"{r.total_steps}{STOPPED_MARK}" + (f" of {r.budget}" if r.budget else "") + f" (stopped early by {r.stopped_by})"


def build_report(paths: Sequence[Path | str], out: Path | str, reps: int = stats.DEFAULT_REPS, seed: int = 0, strict: bool = False,
                 say: Optional[Callable[[str], None]] = None, at_step: Union[int, str, None] = None) -> ReportResult:
    """Write ``evaluations.csv``, ``report.md``, ``performance_profile.png`` and ``learning_curves.png`` of the runs under
    ``paths`` into ``out`` (``reps`` bootstrap resamples, generator seed ``seed``; ``at_step``: :func:`cut_records`)."""
    if at_step is not None and at_step != "common" and (isinstance(at_step, bool) or not isinstance(at_step, int) or at_step < 1):
        raise ReportError(f"at_step must be a step >= 1 or 'common', got {at_step!r}")
    say = say or (lambda m: None)
    if isinstance(reps, bool) or int(reps) < 1:
        raise ReportError(f"reps must be at least 1 bootstrap resample, got {reps}")
    try:
        check_limit("--reps", int(reps), MAX_REPS, "bootstrap resamples; 2,000 give intervals to a tenth of a point")
    except LimitError as exc:
        raise ReportError(str(exc)) from None
    book_notes: List[str] = []
    runs, skipped = gather(paths, strict=strict, notes=book_notes, at_step=at_step)
    for message in book_notes + [f"skipped {d}: {why}" for d, why in skipped]:
        say(message)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(runs, out / "evaluations.csv")]
    scores = seed_scores(runs)
    tasks, metric, scope_notes = aggregate_scope(scores, runs)
    lines = ["# Report", "",
             f"{len(runs)} run folder(s), {sum(len(r.seeds) for r in runs)} seed run(s), {len(scores)} task(s). Intervals: 95% percentile "
             f"intervals of a stratified bootstrap over seeds ({reps} resamples, generator seed {seed}). IQM: mean of the middle 50% of runs.",
             "", "**best\\*** is each seed's highest evaluation during training: choosing the checkpoint by its evaluation score is "
             "online selection, so best\\* is optimistic (biased upward) and not comparable with offline results; report **final**.", ""]
    if at_step is not None:
        budget = "the last step every run of its task has evaluated" if at_step == "common" else f"step {at_step:,}"
        lines += [f"**Equal budgets**: every run as it stood at {budget} (`--at-step {at_step}`): final is the mean of its last three "
                  "evaluations up to there, offline the BC-loss rule (and offline FQE its FQE values) over them (the step of each task, "
                  "and any run left out: Notes).", ""]
    lines += ["## Per task", "", *task_tables(scores, runs, reps, seed), *curve_tables(runs), *fqe_order_table(runs),
              "## Aggregate over tasks", ""]
    if tasks:
        what = METRIC_TITLES[metric].split(" (")[0]
        lines += [f"Pooled: {', '.join(tasks)}; score: {what}. Mean and median are of per-task means; IQM and the optimality gap "
                  f"pool every run" + (f" (gap: how far runs fall short of {GAP_GAMMA:g}, lower is better)." if metric == "normalized_score"
                                       else "; the optimality gap needs a normalised score."), ""]
        lines += aggregate_table(scores, tasks, metric, reps, seed) + [""]
        if any(len(scores[t][a].final) for t in tasks for a in scores[t]):
            taus, profiles = profile_data(scores, tasks, reps, seed)
            files.append(plot_performance_profile(taus, profiles, out / "performance_profile.png", metric=metric, tasks=tasks))
    else:
        lines += ["No aggregate: the tasks have no common score scale (none has a normalised score).", ""]
    files.append(plot_report_curves(curve_data(runs, reps, seed), {t: task_metric(runs, t) for t in scores}, out / "learning_curves.png"))
    notes = scope_notes + _notes(runs) + book_notes
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Runs", "", "| run | algorithm | task | seeds | steps |", "|---|---|---|---|---:|"]
    in_order = sorted(runs, key=lambda r: (r.task, algorithm_order(r.algorithm), algorithm_order(r.label)))
    lines += [f"| {r.label} | {r.algorithm} | {r.task} | {', '.join(map(str, r.seeds))} | {_steps_text(r)} |" for r in in_order]
    lines.append("")
    if skipped:
        lines += ["## Skipped", ""] + [f"- `{d}`: {why}" for d, why in skipped] + [""]
    markdown = "\n".join(lines)
    (out / "report.md").write_text(markdown)
    files.insert(1, out / "report.md")
    return ReportResult(out=out, markdown=markdown, files=files, runs=runs, skipped=skipped)
