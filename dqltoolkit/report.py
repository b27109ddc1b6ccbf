"""The ``report`` job: run folders (or a sweep of them) -> a tidy CSV of every evaluation, markdown
tables of final and best scores with IQM and bootstrap intervals, a performance profile and learning curves.

A run folder is what ``dqltoolkit train`` writes: ``config.yaml`` (agent, task, seeds, the resolved
settings), ``metrics.csv`` (the periodic evaluations of ``--eval-freq``, per seed as
``eval/<metric>_seed<s>`` when the run trained several) and ``results.json`` (the end-of-run evaluation
of each seed, and ``total_steps``). A folder that is broken or unfinished is *skipped*, not fatal: a
report over a sweep with one crashed trial is still written, and lists each skipped folder with the
file and field at fault (``strict=True`` makes any skip an error instead). Statistics: dqltoolkit/stats.py.
See docs/report.md for what each number means.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from . import stats

#: what a run folder holds; a folder with either of :data:`RUN_MARKERS` is one (``train`` writes ``config.yaml``
#: and ``metrics.csv`` as it starts, ``results.json`` when it ends), so a folder holding only a ``config.yaml``
#: (a sweep's own settings, say) is not mistaken for a broken run
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
SCORE_ROWS = {"final": "final", "best": "best\\*"}


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
    rows: List[Tuple[int, int, str, str, float]] = field(default_factory=list)
    label: str = ""
    algorithm: str = ""


@dataclass
class ReportResult:
    out: Path
    markdown: str
    files: List[Path]
    runs: List[Run]
    skipped: List[Tuple[Path, str]]


# ---------------------------------------------------------------------------------------------- finding and reading


def find_run_dirs(paths: Sequence[Path | str]) -> List[Path]:
    """Run folders among ``paths`` and below them (a folder holding any of :data:`RUN_MARKERS`; the search
    does not go inside a run folder). Raises :class:`ReportError` naming paths that do not exist, or all
    of them when no run folder is found."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportError("no paths given: name run folders or a sweep folder")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ReportError(f"no such folder: {', '.join(missing)}")
    found: List[Path] = []
    for root in paths:
        if root.is_file():
            raise ReportError(f"{root} is a file: name the run folder that holds it (or a folder above it)")
        for here, dirs, files in os.walk(root):
            if any(f in files for f in RUN_MARKERS):
                found.append(Path(here))
                dirs.clear()
            else:
                dirs.sort()
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ReportError(f"no run folders (a folder with {' and '.join(RUN_FILES)}, as `dqltoolkit train` writes; found by its "
                          f"{' or '.join(RUN_MARKERS)}) under: "
                          + ", ".join(str(p) for p in paths))
    return unique


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


def _read_results(path: Path, seeds: List[int]) -> Tuple[int, List[Tuple[int, int, str, str, float]]]:
    """``total_steps`` and the end-of-run evaluation rows of ``results.json``."""
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
        for key, metric in METRICS.items():
            if key in entry:
                rows.append((seed, total, "final", metric, _number(entry[key], f"{where}.{key}'")))
        for key in EXTRA_FINAL_METRICS:
            if key in entry:
                rows.append((seed, total, "final", key, _number(entry[key], f"{where}.{key}'")))
    kinds = {tuple(sorted(k for k in METRICS if k in e)) for e in evaluation}
    if len(kinds) > 1:
        raise RunSkipped(f"{file}: the entries of field 'evaluation' do not all have the same scores ({sorted(kinds)})")
    missing = sorted(set(seeds) - {r[0] for r in rows})
    if missing:
        raise RunSkipped(f"{file}: field 'evaluation' has no entry for seed(s) {missing} of config.yaml's seeds {seeds}")
    return total, rows


def _read_metrics(path: Path, seeds: List[int]) -> List[Tuple[int, int, str, str, float]]:
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
    columns: Dict[Tuple[int, str], str] = {}
    for key, metric in METRICS.items():
        for s in seeds:
            name = f"eval/{key}_seed{s}" if len(seeds) > 1 else f"eval/{key}"
            if name in header:
                columns[(s, metric)] = name
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
    total, final = _read_results(path, seeds)
    periodic = _read_metrics(path, seeds)
    cfg = doc["config"]
    agent = doc.get("agent") or doc.get("init") or f"{cfg.get('head', '?')}+{cfg.get('objective', '?')}"
    agent = Path(str(agent)).stem if str(agent).endswith((".yaml", ".yml", ".zip")) else str(agent)
    return Run(path=path, agent=agent, task=str(doc["env"]), config=cfg, seeds=seeds, total_steps=total, rows=sorted(periodic) + final)


def gather(paths: Sequence[Path | str], strict: bool = False) -> Tuple[List[Run], List[Tuple[Path, str]]]:
    """Every reportable run under ``paths`` and the (folder, reason) of each one skipped."""
    runs, skipped = [], []
    for d in find_run_dirs(paths):
        try:
            runs.append(load_run(d))
        except RunSkipped as exc:
            if strict:
                raise ReportError(f"{d}: {exc} (without --strict it would be skipped)") from None
            skipped.append((d, str(exc)))
    if not runs:
        raise ReportError("every run folder was skipped:\n" + "\n".join(f"  {d}: {why}" for d, why in skipped))
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
    """Label each run by its folder (relative to the runs' common parent) and name its algorithm: the
    agent, plus every setting that differs between that agent's runs on one task (so one agent trained
    with several ``-p eta=...`` values gives one algorithm per value)."""
    parents = [str(r.path.parent) for r in runs]
    base = Path(os.path.commonpath(parents)) if len(runs) > 1 else runs[0].path.parent
    for r in runs:
        r.label = r.path.relative_to(base).as_posix()
    varying: Dict[str, set] = {}
    groups: Dict[Tuple[str, str], List[Run]] = {}
    for r in runs:
        groups.setdefault((r.agent, r.task), []).append(r)
    for (agent, _), group in groups.items():
        keys = set().union(*(g.config for g in group)) - NOT_ALGORITHM_KEYS
        varying.setdefault(agent, set()).update(k for k in keys if len({repr(g.config.get(k)) for g in group}) > 1)
    for r in runs:
        keys = sorted(varying.get(r.agent, ()))
        r.algorithm = " ".join([r.agent] + [f"{k}={_value_text(r.config.get(k))}" for k in keys])


# ---------------------------------------------------------------------------------------------- tables


def tidy_rows(runs: Sequence[Run]) -> List[Dict[str, Any]]:
    """One dict per (run, seed, step, kind, metric): the rows of ``evaluations.csv``."""
    return [{"run": r.label, "algorithm": r.algorithm, "agent": r.agent, "task": r.task, "seed": seed, "step": step, "kind": kind,
             "metric": metric, "value": value} for r in runs for (seed, step, kind, metric, value) in r.rows]


def write_csv(rows: Sequence[Dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def task_metric(runs: Sequence[Run], task: str) -> str:
    """``normalized_score`` where every run of ``task`` has one at its end, else ``return``."""
    finals = [{m for (_, _, kind, m, _) in r.rows if kind == "final"} for r in runs if r.task == task]
    return "normalized_score" if finals and all("normalized_score" in f for f in finals) else "return"


@dataclass
class SeedScores:
    """Per-seed final and best (the highest of all its evaluations) scores of one algorithm on one task."""

    final: np.ndarray
    best: np.ndarray
    runs: List[str]


def seed_scores(runs: Sequence[Run]) -> Dict[str, Dict[str, SeedScores]]:
    """task -> algorithm -> per-seed scores on the task's metric (see :func:`task_metric`)."""
    out: Dict[str, Dict[str, SeedScores]] = {}
    for task in sorted({r.task for r in runs}):
        metric = task_metric(runs, task)
        by_alg: Dict[str, Tuple[List[float], List[float], List[str]]] = {}
        for r in (r for r in runs if r.task == task):
            final, best, labels = by_alg.setdefault(r.algorithm, ([], [], []))
            for s in r.seeds:
                values = [(kind, v) for (seed, _, kind, m, v) in r.rows if seed == s and m == metric]
                final.append(next(v for kind, v in values if kind == "final"))
                best.append(max(v for _, v in values))
                labels.append(f"{r.label}#seed{s}")
        out[task] = {a: SeedScores(np.array(f), np.array(b), lab) for a, (f, b, lab) in sorted(by_alg.items(), key=lambda kv: algorithm_order(kv[0]))}
    return out


def _fmt(x: float) -> str:
    a = abs(float(x))
    return f"{x:.1f}" if a >= 100 else f"{x:.2f}" if a >= 10 else f"{x:.3f}"


def _cell(e: stats.Estimate) -> str:
    return f"{_fmt(e.point)} [{_fmt(e.lower)}, {_fmt(e.upper)}]"


METRIC_TITLES = {"normalized_score": "normalised score (D4RL scale: 0 random, 100 expert)", "return": "episode return (the task has no normalised score)"}


def task_tables(scores: Dict[str, Dict[str, SeedScores]], runs: Sequence[Run], reps: int, seed: int) -> List[str]:
    """Markdown lines: one table per task of final and best scores, mean and IQM with their intervals."""
    lines: List[str] = []
    for task, algs in scores.items():
        metric = task_metric(runs, task)
        lines += [f"### {task}", "", f"Score: {METRIC_TITLES[metric]}, at the end of training (final) and the best of each seed's "
                  "evaluations (best\\*).", "",
                  "| algorithm | seeds | final: mean [95% CI] | final: IQM [95% CI] | best\\*: mean [95% CI] | best\\*: IQM [95% CI] |",
                  "|---|---:|---|---|---|---|"]
        for alg, sc in algs.items():
            cells = [_cell(stats.stratified_bootstrap([x], fn, reps, seed)) for x in (sc.final, sc.best) for fn in (stats.aggregate_mean, stats.iqm)]
            lines.append(f"| {alg} | {len(sc.final)} | " + " | ".join(cells) + " |")
        lines.append("")
        mine = [r for r in runs if r.task == task]
        for extra in EXTRA_FINAL_METRICS:
            if not all(any(kind == "final" and m == extra for (_, _, kind, m, _) in r.rows) for r in mine):
                continue
            lines += [f"End of training, `{extra}` ({EXTRA_TITLES.get(extra, extra)}):", "",
                      f"| algorithm | seeds | {extra}: mean [95% CI] | {extra}: IQM [95% CI] |", "|---|---:|---|---|"]
            for alg in algs:
                values = np.array([v for r in mine if r.algorithm == alg for (_, _, kind, m, v) in r.rows if kind == "final" and m == extra])
                cells = [_cell(stats.stratified_bootstrap([values], fn, reps, seed)) for fn in (stats.aggregate_mean, stats.iqm)]
                lines.append(f"| {alg} | {len(values)} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def aggregate_scope(scores: Dict[str, Dict[str, SeedScores]], runs: Sequence[Run]) -> Tuple[List[str], str, List[str]]:
    """The tasks the aggregate table and the performance profile pool (scores must share a scale), their
    metric, and notes on what was left out."""
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
    algorithms = sorted({a for t in tasks for a in scores[t]}, key=algorithm_order)
    for alg in algorithms:
        have = [t for t in tasks if alg in scores[t]]
        for which in ("final", "best"):
            per_task = [getattr(scores[t][alg], which) for t in have]
            cells = [_cell(stats.stratified_bootstrap(per_task, fn, reps, seed)) for fn in (stats.iqm, stats.aggregate_mean, stats.aggregate_median)]
            cells.append(_cell(stats.stratified_bootstrap(per_task, lambda s: stats.optimality_gap(s, GAP_GAMMA), reps, seed)) if gap else "n/a")
            lines.append(f"| {alg} | {len(have)} of {len(tasks)} | {sum(len(x) for x in per_task)} | {SCORE_ROWS[which]} | "
                         + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------------------------------- figures' data


def profile_data(scores: Dict[str, Dict[str, SeedScores]], tasks: Sequence[str], reps: int, seed: int, points: int = 101):
    """Taus and, per algorithm, the final-score distribution over them with its interval."""
    pooled = np.concatenate([s.final for t in tasks for s in scores[t].values()])
    lo, hi = float(pooled.min()), float(pooled.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
    taus = np.linspace(lo - pad, hi + pad, points)
    algorithms = sorted({a for t in tasks for a in scores[t]}, key=algorithm_order)
    profiles = {}
    for alg in algorithms:
        per_task = [scores[t][alg].final for t in tasks if alg in scores[t]]
        profiles[alg] = stats.stratified_bootstrap(per_task, lambda s: stats.score_distribution(s, taus), reps, seed)
    return taus, profiles


def curve_data(runs: Sequence[Run], reps: int, seed: int) -> Dict[str, Dict[str, Tuple[np.ndarray, stats.Estimate, bool]]]:
    """task -> algorithm -> (steps, mean over seeds with its interval at each step, periodic?) on the task's metric.
    Periodic evaluations when the runs have them, else the end-of-run evaluation as one point."""
    out: Dict[str, Dict[str, Tuple[np.ndarray, stats.Estimate, bool]]] = {}
    for task in sorted({r.task for r in runs}):
        metric = task_metric(runs, task)
        algs: Dict[str, List[Run]] = {}
        for r in runs:
            if r.task == task:
                algs.setdefault(r.algorithm, []).append(r)
        out[task] = {}
        for alg, group in sorted(algs.items(), key=lambda kv: algorithm_order(kv[0])):
            rows = [(s, st, v) for r in group for (s, st, kind, m, v) in r.rows if m == metric and kind == "periodic"]
            periodic = bool(rows)
            if not periodic:
                rows = [(s, st, v) for r in group for (s, st, kind, m, v) in r.rows if m == metric and kind == "final"]
            steps = np.array(sorted({st for _, st, _ in rows}))
            points, lows, highs = [], [], []
            for st in steps:
                values = np.array([v for _, s2, v in rows if s2 == st])
                e = stats.stratified_bootstrap([values], stats.aggregate_mean, reps, seed)
                points.append(e.point)
                lows.append(e.lower)
                highs.append(e.upper)
            out[task][alg] = (steps, stats.Estimate(np.array(points), np.array(lows), np.array(highs)), periodic)
    return out


# ---------------------------------------------------------------------------------------------- the job


def _notes(runs: Sequence[Run]) -> List[str]:
    notes = []
    seen: Dict[Tuple[str, str, int], str] = {}
    for r in runs:
        for s in r.seeds:
            key = (r.algorithm, r.task, s)
            if key in seen:
                notes.append(f"{r.algorithm} on {r.task}: seed {s} appears in both {seen[key]} and {r.label} (both are counted)")
            seen[key] = r.label
    return notes


def build_report(paths: Sequence[Path | str], out: Path | str, reps: int = stats.DEFAULT_REPS, seed: int = 0, strict: bool = False,
                 say: Optional[Callable[[str], None]] = None) -> ReportResult:
    """Gather the runs under ``paths`` and write ``evaluations.csv``, ``report.md``, ``performance_profile.png``
    and ``learning_curves.png`` into ``out``. ``reps`` bootstrap resamples from generator seed ``seed``."""
    from .report_plots import plot_performance_profile, plot_report_curves

    say = say or (lambda m: None)
    if isinstance(reps, bool) or int(reps) < 1:
        raise ReportError(f"reps must be at least 1 bootstrap resample, got {reps}")
    runs, skipped = gather(paths, strict=strict)
    for d, why in skipped:
        say(f"skipped {d}: {why}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(tidy_rows(runs), out / "evaluations.csv")]
    scores = seed_scores(runs)
    tasks, metric, scope_notes = aggregate_scope(scores, runs)
    lines = ["# Report", "",
             f"{len(runs)} run folder(s), {sum(len(r.seeds) for r in runs)} seed run(s), {len(scores)} task(s). Intervals: 95% percentile "
             f"intervals of a stratified bootstrap over seeds ({reps} resamples, generator seed {seed}). IQM: mean of the middle 50% of runs.",
             "", "**best\\*** is each seed's highest evaluation during training: choosing the checkpoint by its evaluation score is "
             "online selection, so best\\* is optimistic (biased upward) and not comparable with offline results; report **final**.", "",
             "## Per task", ""]
    lines += task_tables(scores, runs, reps, seed)
    lines += ["## Aggregate over tasks", ""]
    if tasks:
        what = METRIC_TITLES[metric].split(" (")[0]
        lines += [f"Pooled: {', '.join(tasks)}; score: {what}. Mean and median are of per-task means; IQM and the optimality gap "
                  f"pool every run" + (f" (gap: how far runs fall short of {GAP_GAMMA:g}, lower is better)." if metric == "normalized_score"
                                       else "; the optimality gap needs a normalised score."), ""]
        lines += aggregate_table(scores, tasks, metric, reps, seed) + [""]
        taus, profiles = profile_data(scores, tasks, reps, seed)
        files.append(plot_performance_profile(taus, profiles, out / "performance_profile.png", metric=metric, tasks=tasks))
    else:
        lines += ["No aggregate: the tasks have no common score scale (none has a normalised score).", ""]
    files.append(plot_report_curves(curve_data(runs, reps, seed), {t: task_metric(runs, t) for t in scores}, out / "learning_curves.png"))
    notes = scope_notes + _notes(runs)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Runs", "", "| run | algorithm | task | seeds | steps |", "|---|---|---|---|---:|"]
    lines += [f"| {r.label} | {r.algorithm} | {r.task} | {', '.join(map(str, r.seeds))} | {r.total_steps} |" for r in runs]
    lines.append("")
    if skipped:
        lines += ["## Skipped", ""] + [f"- `{d}`: {why}" for d, why in skipped] + [""]
    markdown = "\n".join(lines)
    (out / "report.md").write_text(markdown)
    files.insert(1, out / "report.md")
    return ReportResult(out=out, markdown=markdown, files=files, runs=runs, skipped=skipped)
