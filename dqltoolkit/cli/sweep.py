"""`sweep`: many runs on Ray Tune."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from ..config import ConfigError
from ..registry import UnknownNameError
from ..sweep import run_sweep
from ..sweep_spec import SweepError, load_sweep
from . import _fail, main


@main.command()
@click.argument("sweep_file", metavar="SWEEP.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Sweep folder: sweep.json, trials/<trial>/ (one run folder per trial, as train writes) and tune/ (Ray Tune's records). "
                   "On a cluster, a folder every node sees at the same path.")
@click.option("--address", default=None, metavar="ADDR",
              help="Ray cluster to join (e.g. 10.0.0.5:6379 after `ray start --head` there) [RAY_ADDRESS; else Ray starts in this process].")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out: trials with a complete results.json are skipped, the others run again.")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the Ray started in this process (no --address) [every usable core].")
def sweep(sweep_file: Path, out: Path, address: Optional[str], resume: bool, num_cpus: Optional[int]) -> None:
    """Run a sweep file's trials (agents x tasks x grid or search space, every seed of a trial in one process) on
    Ray Tune, with ASHA early stopping if the file asks for it. Needs the ray extra: pip install 'dqltoolkit[ray]'.
    See docs/sweeps.md and the files in sweeps/.

    SIGINT (Ctrl-C) and SIGTERM stop the sweep; --resume continues it (exit status 130)."""
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        spec = load_sweep(sweep_file)
        doc = run_sweep(spec, out, address=address, resume=resume, cpus=num_cpus, say=say)
    except (SweepError, ConfigError, UnknownNameError) as exc:
        _fail(exc)
    except KeyboardInterrupt:  # a signal before Tune took over (while Ray started): sweep.json marks what ran
        click.echo(f"interrupted; continue with: dqltoolkit sweep {sweep_file} --out {out} --resume", err=True)
        sys.exit(130)
    metric = doc.get("metric", "mean_return")
    for e in doc["trials"].values():  # one line per trial: status, evaluations, last metric, run folder
        value = f"{metric} {e['last'][metric]:.3f}" if metric in e.get("last", {}) else "-"
        click.echo(f"{e['status']:>13}  {e.get('evaluations', 0):>3} evals  {value:>24}  {e['run_dir']}")
    statuses = [e["status"] for e in doc["trials"].values()]
    wall = doc["attempts"][-1].get("wall_seconds")
    click.echo(f"{statuses.count('finished')} finished, {statuses.count('stopped_early')} stopped early, {statuses.count('error')} failed, "
               f"{statuses.count('interrupted')} interrupted" + (f" in {wall:.1f}s" if wall is not None else "") + f": {Path(out) / 'sweep.json'}")
    if "interrupted" in statuses:
        click.echo(f"continue with: dqltoolkit sweep {sweep_file} --out {out} --resume", err=True)
        sys.exit(130)
    if "error" in statuses:
        sys.exit(1)
