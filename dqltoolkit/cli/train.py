"""`train` and `finetune`: a run from a recipe or a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from ..config import ConfigError, parse_overrides
from ..evaluation import describe
from ..faults import RunLockError, TrainingInterrupted, signal_name
from ..registry import UnknownNameError
from ..runs import new_run_dir
from ..training import TrainingDiverged, parse_seeds
from ..training import train as run_train
from . import _fail, _threads, _threads_option, main


@main.command()
@click.option("--agent", "agent", default=None, help="Recipe name from `dqltoolkit list agents`, or a path to a recipe YAML [diffusion-ql].")
@click.option("--env", "env", required=True,
              help="Task: a catalogue id from `dqltoolkit list envs` (e.g. bandit2d-v0, hopper-medium-v2), minari:<dataset id> or "
                   "d4rl:<file.hdf5>; a dataset of a catalogue task gets that task's recipe section.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [a new runs/<agent>-<env>, numbered _2, _3, ... when taken]. A folder holding an earlier, finished run "
                   "loses that run's outputs; one holding an unfinished run (model_interrupted.zip) is refused.")
@click.option("--steps", type=int, default=None, help="Gradient steps (default: the recipe's `steps`); with --resume: how many more.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the one run (networks, batches, noise); see --seeds for several.")
@click.option("--seeds", type=str, default=None, help="Train several seeds in one process, e.g. 0-4 (overrides --seed).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--head", default=None, help="Swap the recipe's policy head (e.g. gaussian).")
@click.option("-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key; repeatable. Typed by the recipe. With --resume only settings that keep the networks "
                   "(lr, eta, tau, batch_size, ...) may change; the others are refused.")
@click.option("--eval-freq", type=int, default=None, help="Evaluate every N gradient steps (default: the recipe's eval_freq).")
@click.option("--download", is_flag=True, help="Download a Minari dataset that is not local (needs a network).")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Continue from a checkpoint (its recipe, seeds and optimiser state) up to its run's steps, or --steps more; "
                   "zoo:<id> works too.")
@click.option("--init", type=str, default=None,
              help="Fine-tune: a new run from a checkpoint's weights (path or zoo:<id>) with its recipe, -p overrides, fresh optimisers.")
@click.option("--save-every", type=int, default=None, metavar="N",
              help="Every N steps write model_latest.zip (all seeds, resumable; atomic, only when finite): a killed run loses at most N steps.")
@click.option("--keep-checkpoints", type=int, default=None, metavar="K",
              help="With --save-every: also keep the last K periodic checkpoints as model_step<N>.zip (for `dqltoolkit select`).")
@click.option("--no-progress", is_flag=True, help="Print log lines instead of a progress bar.")
@click.option("--logger", "loggers", default=None, metavar="FORMATS",
              help="SB3 logger formats, comma-separated: stdout, csv, log (log.txt), json (progress.json), tensorboard (event "
                   "files in the run folder; pip install 'dqltoolkit[tensorboard]'), wandb (a Weights & Biases run, offline in "
                   "<out>/wandb unless WANDB_MODE is set; pip install 'dqltoolkit[wandb]'). metrics.csv is always written "
                   "[stdout with --no-progress].")
@_threads_option
@click.pass_context
def train(ctx: click.Context, agent: Optional[str], env: str, out: Optional[Path], steps: Optional[int], seed: int, seeds: Optional[str],
          device: str, head: Optional[str], params: Tuple[str, ...], eval_freq: Optional[int], download: bool, resume: Optional[Path],
          init: Optional[str], save_every: Optional[int], keep_checkpoints: Optional[int], no_progress: bool, loggers: Optional[str],
          threads: str) -> None:
    """Train an agent offline on a task's dataset, then evaluate it and save model.zip.

    SIGINT (Ctrl-C) and SIGTERM stop the run after the current gradient step and save model_interrupted.zip,
    from which --resume continues exactly as if the run had never stopped (exit status 130 or 143)."""
    if init is not None and agent is not None:
        _fail(ValueError("--agent does not apply with --init: the checkpoint's recipe is used (change its settings with -p key=value)"))
    if resume is not None and agent is not None:
        _fail(ValueError("--agent does not apply with --resume: the checkpoint's recipe is continued (see -p for what may change)"))
    agent = None if resume is not None else agent or (init if init is not None else "diffusion-ql")
    seeds_given = seeds is not None or ctx.get_parameter_source("seed") not in (None, click.core.ParameterSource.DEFAULT)
    try:
        for name, value, what in (("--steps", steps, "gradient steps"), ("--save-every", save_every, "gradient steps"),
                                  ("--keep-checkpoints", keep_checkpoints, "checkpoints")):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive number of {what}, got {value}")
        if keep_checkpoints is not None and save_every is None:
            raise ValueError("--keep-checkpoints keeps periodic checkpoints: give --save-every N too")
        overrides = parse_overrides(params)
        overrides.update({k: v for k, v in (("head", head), ("eval_freq", eval_freq)) if v is not None})
        seed_list = parse_seeds(seeds) if seeds else [seed]
        if out is None:
            stem = f"{resume.parent.name or resume.stem}-resumed" if resume is not None else Path(agent.replace(":", "-")).stem
            out = new_run_dir(Path("runs") / f"{stem}-{env}")
        say = lambda m: click.echo(m, err=True)  # noqa: E731
        with _threads(threads, say):
            res = run_train(agent, env, out, steps=steps, seeds=seed_list if resume is None or seeds_given else None,
                            device=device, overrides=overrides, progress=not no_progress, download=download, resume=resume,
                            init=init, save_every=save_every, keep_checkpoints=keep_checkpoints, say=say,
                            loggers=[x.strip() for x in loggers.split(",") if x.strip()] if loggers is not None else None)
    except (ConfigError, UnknownNameError, ValueError, FileNotFoundError, TrainingDiverged, RunLockError) as exc:
        _fail(exc)
    except TrainingInterrupted as exc:
        how = "" if exc.exact else " (stopped inside a step: a resumed run will not match an uninterrupted one bit for bit)"
        cont = f"; continue with: dqltoolkit train --env {env} --resume {exc.checkpoint}" if exc.checkpoint is not None else ""
        click.echo(f"interrupted by {signal_name(exc.signum)} at step {exc.step}: {exc.message}{cont}{how}", err=True)
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt:  # before the first gradient step: nothing trained, nothing to save
        click.echo("interrupted before training started: nothing was saved", err=True)
        sys.exit(130)
    r = res.results
    span = f" (steps {r['first_step']} -> {r['total_steps']} of the run)" if r["first_step"] else ""
    click.echo(f"trained {r['steps']} steps{span} of seeds {r['seeds']} in {r['train_seconds']:.1f}s ({r['steps_per_s']:.1f} steps/s)")
    for e in r.get("evaluation", []):
        line = describe(e, f"seed {e['seed']}")
        if "mode_shares" in e:
            line += "\n  policy samples on modes: " + ", ".join(f"{k} {v:.1%}" for k, v in e["mode_shares"].items())
        click.echo(line)
    if len(r.get("evaluation", [])) > 1:
        click.echo(f"over seeds: mean return {r['mean_return']:.3f} +- {r['std_return_over_seeds']:.3f}")
    for c in res.checkpoints:
        click.echo(f"saved {c}")
    for path in res.written:
        if path not in res.checkpoints and path.suffix != ".npy":
            click.echo(f"wrote {path}")


@main.command()
@click.argument("checkpoint", type=str)
@click.option("--env", "env", required=True, help="The task whose env the agent acts in (and whose dataset it keeps learning from).")
@click.option("--timesteps", type=click.IntRange(min=1), required=True, help="Env steps per seed (one gradient step after each).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder [a new runs/<name>-finetune-<env>].")
@click.option("-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Settings that keep the networks (lr, eta, online_offline_ratio, explore_noise, ...; see `train --resume`).")
@click.option("--eval-freq", type=int, default=None, help="Evaluate every N steps (default: the recipe's eval_freq).")
@click.option("--save-every", type=int, default=None, metavar="N", help="Write model_latest.zip every N steps.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--no-progress", is_flag=True, help="Print log lines instead of a progress bar.")
@_threads_option
@click.pass_context
def finetune(ctx: click.Context, checkpoint: str, env: str, timesteps: int, out: Optional[Path], params: Tuple[str, ...], eval_freq: Optional[int],
             save_every: Optional[int], device: str, no_progress: bool, threads: str) -> None:
    """Fine-tune CHECKPOINT (a path, zoo:<id> or hf:ORG/NAME) online: each seed acts in its own copy of the task's env
    with its own exploration, new transitions join the offline data (-p online_offline_ratio=0.5: RLPD's mix), and
    training goes on from the checkpoint exactly (weights, optimisers, targets, EMA, step count). A run like any
    other: SIGTERM keeps it, --save-every and `train --resume` continue it. See dqltoolkit/online.py."""
    if out is None:
        stem = Path(checkpoint.split(":", 1)[-1]).stem.replace("/", "-")
        out = new_run_dir(Path("runs") / f"{stem}-finetune-{env}")
    ctx.invoke(train, agent=None, env=env, out=out, steps=timesteps, seed=0, seeds=None, device=device, head=None,
               params=tuple(params) + ("online=true",), eval_freq=eval_freq, download=False, resume=Path(checkpoint), init=None,
               save_every=save_every, keep_checkpoints=None, no_progress=no_progress, loggers=None, threads=threads)
