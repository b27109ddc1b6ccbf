"""`ablate`, `report` and `select`: results over runs and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import click

from ..ablation import run_ablation
from ..config import ConfigError, parse_overrides
from ..fqe import FQEConfig
from ..registry import UnknownNameError
from ..report import ReportError, build_report
from ..select_job import SelectError, select_run, selection_table
from ..training import parse_seeds
from . import _fail, _threads, _threads_option, main


@main.command()
@click.option("--env", "env", default="bandit2d-v0", show_default=True, help="A task with a 2-D action space and a constant observation.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/ablation"), show_default=True,
              help="Folder for ablation.csv, ablation.png and one sub-folder per run.")
@click.option("--heads", default=None, help="Subset of policy classes: mle,cvae,mmd,diffusion (and the labels extra panels declare).")
@click.option("--objectives", default=None, help="Subset of objectives: bc,ql (and the labels extra panels declare).")
@click.option("--extra", is_flag=True, help="Add every extra panel: recipes with an 'ablation:' block (shipped and in --recipe-dir).")
@click.option("--panels", default=None, help="Exactly these panels, by title, e.g. 'Diffusion-QL,Consistency-QL'.")
@click.option("--recipe-dir", "recipe_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder of recipes whose 'ablation:' blocks declare more panels; repeatable.")
@click.option("--seeds", default="0", show_default=True, help="Seeds per variant, e.g. 0-2.")
@click.option("--steps", type=int, default=None, help="Gradient steps per run (default: each recipe's).")
@click.option("-p", "params", multiple=True, metavar="KEY=VALUE", help="Override a key in every recipe; repeatable.")
@click.option("--workers", type=int, default=None, help="Parallel runs (default: one per core).")
def ablate(env: str, out: Path, heads: Optional[str], objectives: Optional[str], extra: bool, panels: Optional[str],
           recipe_dirs: Tuple[Path, ...], seeds: str, steps: Optional[int], params: Tuple[str, ...], workers: Optional[int]) -> None:
    """Train the paper's eight bandit panels (BC and QL x MLE, CVAE, MMD, diffusion) and compare them; --extra or
    --panels adds the panels that recipes declare."""
    def split(v):
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    try:
        res = run_ablation(env, out, heads=split(heads), objectives=split(objectives), seeds=parse_seeds(seeds), steps=steps,
                           overrides=parse_overrides(params), workers=workers, panels=split(panels), extra=extra,
                           recipe_dirs=recipe_dirs)
    except (ConfigError, UnknownNameError, ValueError) as exc:
        _fail(exc)
    click.echo(res["markdown"])
    click.echo(f"wrote {res['csv']}\nwrote {res['png']}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for evaluations.csv, report.md, performance_profile.png and learning_curves.png "
                   "[PATH/report for one PATH, else ./report].")
@click.option("--reps", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Bootstrap resamples behind each 95% interval (percentile method).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap's random generator (same seed, same intervals).")
@click.option("--strict", is_flag=True, help="Fail on a broken or unfinished run folder instead of skipping it (skips are listed in report.md).")
@click.option("--at-step", "at_step", default=None, metavar="N|common",
              help="Results records only: every run as it stood at step N, or 'common': at the last step all runs of a task have "
                   "evaluated (equal budgets for every algorithm).")
def report(paths: Tuple[Path, ...], out: Optional[Path], reps: int, seed: int, strict: bool, at_step: Optional[str]) -> None:
    """Report run folders of `dqltoolkit train` (or a sweep folder holding them): a tidy CSV of every
    evaluation, per-task tables of final and best scores with mean, IQM and bootstrap intervals, an
    aggregate table, a performance profile and learning curves. See docs/report.md."""
    if out is None:
        out = (paths[0].parent if paths[0].is_file() else paths[0]) / "report" if len(paths) == 1 else Path("report")
    try:
        if at_step is not None and at_step != "common":
            if not at_step.isdigit() or int(at_step) < 1:
                raise ReportError(f"--at-step: expected a step >= 1 or 'common', got {at_step[:40]!r}")
            at_step = int(at_step)  # type: ignore[assignment]
        res = build_report(paths, out, reps=reps, seed=seed, strict=strict, say=lambda m: click.echo(f"warning: {m}", err=True),
                           at_step=at_step)
    except ReportError as exc:
        _fail(exc)
    click.echo(res.markdown)
    for f in res.files:
        click.echo(f"wrote {f}")


def _step(text: str) -> int:
    """One ``--checkpoints`` entry as a step; the error names the entry."""
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"--checkpoints: {text.strip()!r} is not a step (a whole number such as 50000)") from None


@main.command("select")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rules", default="bc,fqe", show_default=True, help="Offline rules: bc (the BC-loss rule), fqe (fitted Q evaluation).")
@click.option("--fqe-steps", type=click.IntRange(1, 1_000_000), default=2000, show_default=True, help="FQE fitting steps per checkpoint and seed.")
@click.option("--top-k", type=click.IntRange(min=0), default=None, help="BC-loss rule's rank (default: the official code's per dataset).")
@click.option("--checkpoints", default=None, help="Rank only these steps (comma-separated), e.g. 10000,50000,200000.")
@click.option("--fqe-together", is_flag=True, help="Fit FQE to all ranked checkpoints in one fit, side by side (same batches).")
@click.option("--json", "as_json", is_flag=True, help="Print selection.json instead of the tables.")
@_threads_option
def select(run_dir: Path, rules: str, fqe_steps: int, top_k: Optional[int], checkpoints: Optional[str], fqe_together: bool,
           as_json: bool, threads: str) -> None:
    """Rank a run's saved checkpoints (train --save-every N --keep-checkpoints K) without the simulator: the BC-loss
    rule and fitted Q evaluation, with each pick's regret where the run has online evaluations at those steps.
    Writes RUN_DIR/selection.json and RUN_DIR/selection.png (per seed: online scores, FQE values, each rule's pick)."""
    try:
        with _threads(threads, lambda m: click.echo(m, err=True)):
            steps = None if checkpoints is None else [_step(c) for c in checkpoints.split(",") if c.strip()]
            res = select_run(run_dir, [r.strip() for r in rules.split(",") if r.strip()], FQEConfig(steps=fqe_steps), top_k,
                             checkpoints=steps, together=fqe_together)
    except (SelectError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    click.echo(json.dumps(res, indent=1) if as_json else "\n".join(selection_table(res)))
