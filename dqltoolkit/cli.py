"""The ``dqltoolkit`` command line: train, evaluate, ablate, sweep, report, zoo, dataset, bench, list."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from .config import ConfigError
from .registry import UnknownNameError
from .zoo import ZooError


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


def _threads_option(fn):
    """``--threads`` for the commands that compute (train, evaluate, bench): see dqltoolkit/threads.py."""
    return click.option("--threads", default="auto", show_default=True, metavar="N|auto",
                        help="CPU threads for torch. auto: one per core less the cores other work keeps busy (a quarter-second "
                             "sample of CPU use); OMP_NUM_THREADS wins. On a shared machine give each concurrent job its share: on 2 busy "
                             "cores 1 thread trained 3-6x faster than 2.")(fn)


@contextlib.contextmanager
def _threads(spec: str, say=None):
    """Use ``spec`` threads for the command, the caller's count after it (tests run commands in-process)."""
    import torch

    from .threads import set_threads

    before = torch.get_num_threads()
    try:
        n, why = set_threads(spec)
    except ValueError as exc:
        _fail(exc)
    try:
        if say is not None and n < before:
            say(f"using {n} of {before} torch threads ({why}; --threads N to choose)")
        yield n
    finally:
        torch.set_num_threads(before)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dqltoolkit")
def main() -> None:
    """Offline RL with diffusion policies (Diffusion-QL) and the paper's baselines."""


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
    from .config import parse_overrides
    from .faults import RunLockError, TrainingInterrupted, signal_name
    from .runs import new_run_dir
    from .training import TrainingDiverged, parse_seeds
    from .training import train as run_train

    if init is not None and agent is not None:
        _fail(ValueError("--agent does not apply with --init: the checkpoint's recipe is used (change its settings with -p key=value)"))
    if resume is not None and agent is not None:
        _fail(ValueError("--agent does not apply with --resume: the checkpoint's recipe is continued (see -p for what may change)"))
    agent = None if resume is not None else agent or (init if init is not None else "diffusion-ql")
    seeds_given = seeds is not None or ctx.get_parameter_source("seed") not in (None, click.core.ParameterSource.DEFAULT)
    try:
        for name, value in (("--steps", steps), ("--save-every", save_every), ("--keep-checkpoints", keep_checkpoints)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive number, got {value}")
        if keep_checkpoints is not None and save_every is None:
            raise ValueError("--keep-checkpoints keeps periodic checkpoints: give --save-every N too")
        overrides = parse_overrides(params)
        if head is not None:
            overrides["head"] = head
        if eval_freq is not None:
            overrides["eval_freq"] = eval_freq
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
    from .evaluation import describe

    for e in r.get("evaluation", []):
        line = describe(e, f"seed {e['seed']}")
        if "mode_shares" in e:
            sh = e["mode_shares"]
            line += "\n  policy samples on modes: " + ", ".join(f"{k} {v:.1%}" for k, v in sh.items())
        click.echo(line)
    if len(r.get("evaluation", [])) > 1:
        click.echo(f"over seeds: mean return {r['mean_return']:.3f} +- {r['std_return_over_seeds']:.3f}")
    for c in res.checkpoints:
        click.echo(f"saved {c}")
    for path in res.written:
        if path not in res.checkpoints and path.suffix != ".npy":
            click.echo(f"wrote {path}")


def _positive_episodes(ctx: click.Context, param: click.Parameter, value: Optional[int]) -> Optional[int]:
    """Refuse --episodes below 1 here: 0 used to fall back to the task's default (1,000 on the bandit) silently;
    and above the limit of one vector env, before the checkpoint is even fetched."""
    if value is not None and value < 1:
        raise click.BadParameter(f"{value} episodes: give at least 1 (leave --episodes out for the task's default)")
    if value is not None:
        from .evaluation import check_episodes

        try:
            check_episodes(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _evaluate_options(fn):
    """The options `evaluate` and `zoo evaluate` share."""
    for option in reversed([
        click.option("--env", "env", default=None, help="Task id (default: the task the checkpoint was trained on)."),
        click.option("--episodes", type=int, default=None, callback=_positive_episodes,
                     help="Episodes to run, at least 1 (default: the task's, e.g. 1,000 on the bandit, else the recipe's eval_episodes)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Episode i's env is seeded seed + i; the action sampler is seeded seed + 100."),
        click.option("--deterministic/--stochastic", "deterministic", default=True, show_default=True,
                     help="Act deterministically (SB3 evaluate_policy's default) or draw actions as the stochastic policy does."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]):
        fn = option(fn)
    return fn


def _evaluate_checkpoint(checkpoint: str, env: Optional[str], episodes: Optional[int], seed: int, deterministic: bool, device: str,
                         as_json: bool) -> dict:
    from .agent import Agent
    from .checkpoint import CheckpointError
    from .evaluation import describe
    from .evaluation import evaluate as run_eval
    from .tasks import get_task

    try:
        model = Agent.load(checkpoint, device=device)
        task_id = env or model.task
        if task_id is None:
            raise ValueError(f"{checkpoint} does not name its task; pass --env")
        task = get_task(task_id)
        probe = task.make_env()
        theirs, ours = (probe.observation_space.shape, probe.action_space.shape), (model.observation_space.shape, model.action_space.shape)
        modes = tuple(getattr(probe.unwrapped, a, None) for a in ("mode_names", "mode_centres", "mode_radius"))
        probe.close()
        if theirs != ours:
            raise ValueError(f"{checkpoint} was trained for observations {ours[0]} and actions {ours[1]}, but {task.id}'s env has "
                             f"{theirs[0]} and {theirs[1]}" + (f" (it was trained on {model.task})" if model.task else ""))
        n = episodes or (task.eval_episodes if task.one_step else model.config.eval_episodes)
        model.set_random_seed(seed + 100)
        r = run_eval(model, task.make_env, episodes=n, seed=seed, deterministic=deterministic, progress=True)
    except (CheckpointError, UnknownNameError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    score = task.normalized_score(r["mean_return"])
    if score is not None:
        r["normalized_score"] = score
    r["env"] = task.id
    if modes[0] is not None:  # an env that declares reward modes (the bandit): where 1,000 raw policy samples land, as training reports
        from .envs.bandit2d import mode_shares
        from .training import sample_policy_actions

        r["mode_shares"] = mode_shares(sample_policy_actions(model, 1000, seed=seed), names=modes[0], centres=modes[1], radius=modes[2])
    if as_json:
        click.echo(json.dumps(r))
    else:
        click.echo(describe(r, task.id))
        if "mode_shares" in r:
            click.echo("  policy samples on modes: " + ", ".join(f"{k} {v:.1%}" for k, v in r["mode_shares"].items()))
    return r


@main.command()
@click.argument("checkpoint", type=str)
@_evaluate_options
@_threads_option
def evaluate(checkpoint: str, env: Optional[str], episodes: Optional[int], seed: int, deterministic: bool, device: str,
             as_json: bool, threads: str) -> None:
    """Evaluate CHECKPOINT (a path, zoo:<id> or hf:ORG/NAME) on a task's env (all episodes as one vector env).

    Acts deterministically by default, as SB3's evaluate_policy does; --stochastic draws actions as the
    stochastic policy does. The output says which mode was used."""
    with _threads(threads):
        _evaluate_checkpoint(checkpoint, env, episodes, seed, deterministic, device, as_json)


@main.command("export")
@click.argument("checkpoint", type=str)
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True,
              help="ONNX (run it with onnxruntime, no torch needed) or a TorchScript archive (torch.jit.load).")
@click.option("--steps", type=int, default=None, help="Sampling steps of the head's chain (default: the recipe's sample_steps; 0: all).")
@click.option("--sampler", default=None,
              help="Solver of the head's chain: ddpm, ddim, dpm-solver++ or a registered one (default: the recipe's sampler).")
@click.option("--candidates", type=int, default=None, help="Candidate actions scored by the critic per observation (default: the recipe's n_candidates).")
@click.option("--deterministic", is_flag=True, help="Bake deterministic acting's fixed noise in: observations are the only input.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file [the checkpoint's path with .onnx or .pt; <name>.onnx here for zoo:/hf: ids].")
def export(checkpoint: str, fmt: str, steps: Optional[int], sampler: Optional[str], candidates: Optional[int], deterministic: bool,
           out: Optional[Path]) -> None:
    """Export a checkpoint's acting policy (seed 0) as one ONNX or TorchScript graph: raw observations (and the
    random numbers, as inputs) -> actions in the env's units. See docs/export.md."""
    from .limits import LimitError, check_limit

    try:  # (before the checkpoint is fetched or the exporter imported)
        check_limit("--candidates", candidates or 0, 10_000, "the limit of the recipe key n_candidates")
        check_limit("--steps", steps or 0, 10_000, "the limit of the recipe key sample_steps")
    except LimitError as exc:
        _fail(exc)
    from .agent import Agent
    from .checkpoint import CheckpointError
    from .export import ExportError, check_export, export_policy

    suffix = ".onnx" if fmt == "onnx" else ".pt"
    if out is None:
        out = Path(checkpoint).with_suffix(suffix) if ":" not in checkpoint else Path(checkpoint.split(":", 1)[1].replace("/", "-")).with_suffix(suffix)
    try:
        model = Agent.load(checkpoint, device="cpu")
        path = export_policy(model, out, fmt, steps=steps, candidates=candidates, deterministic=deterministic, sampler=sampler)
        check = check_export(model, path)
    except (CheckpointError, ExportError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    from .export import read_metadata

    meta = read_metadata(path)
    inputs = ", ".join(f"{i['name']} {i['shape']}" for i in meta["inputs"])
    click.echo(f"wrote {path} ({fmt}): {inputs} -> action ['batch', {meta['action_dim']}]; {meta['candidates']} candidate(s), "
               f"selection: {meta['selection']}" + (f"; sampler {meta['sampler']}, {meta['steps'] or 'all'} steps" if meta.get("sampler") else ""))
    click.echo(f"check against the eager policy on {check['rows']} observations: max |diff| {check['max_diff']:.2e}"
               + (f", {len(check['ties'])} tie(s) decided by rounding" if check["ties"] else "")
               + (f", {len(check['mismatches'])} MISMATCH(ES)" if check["mismatches"] else ""))
    if check["mismatches"]:
        sys.exit(1)


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
    from .ablation import run_ablation
    from .config import parse_overrides
    from .training import parse_seeds

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
def report(paths: Tuple[Path, ...], out: Optional[Path], reps: int, seed: int, strict: bool) -> None:
    """Report run folders of `dqltoolkit train` (or a sweep folder holding them): a tidy CSV of every
    evaluation, per-task tables of final and best scores with mean, IQM and bootstrap intervals, an
    aggregate table, a performance profile and learning curves. See docs/report.md."""
    from .report import ReportError, build_report

    if out is None:
        out = (paths[0].parent if paths[0].is_file() else paths[0]) / "report" if len(paths) == 1 else Path("report")
    try:
        res = build_report(paths, out, reps=reps, seed=seed, strict=strict, say=lambda m: click.echo(f"warning: {m}", err=True))
    except ReportError as exc:
        _fail(exc)
    click.echo(res.markdown)
    for f in res.files:
        click.echo(f"wrote {f}")


@main.command()
@click.argument("checkpoint", type=str)
@click.option("--env", default=None, help="Task whose env to record (default: the checkpoint's own task).")
@click.option("--episodes", type=click.IntRange(1, 1000), default=3, show_default=True, help="Episodes, one after another in one file.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("video.mp4"), show_default=True,
              help="An .mp4 (pip install 'dqltoolkit[video]') or a .gif.")
@click.option("--seed", type=int, default=0, show_default=True, help="Episode i resets the env with seed + i.")
@click.option("--stochastic", is_flag=True, help="Act as the stochastic policy does (default: deterministic, as evaluate).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cut each episode after this many steps.")
@click.option("--fps", type=click.FloatRange(min=0.1, max=240), default=None, help="Frames per second (default: the env's render_fps).")
def record(checkpoint: str, env: Optional[str], episodes: int, out: Path, seed: int, stochastic: bool, max_steps: Optional[int],
           fps: Optional[float]) -> None:
    """Record CHECKPOINT (a path, zoo:<id> or hf:ORG/NAME) acting in its task's env as a video: rendered frames
    (render_mode="rgb_array"), off-screen on a machine without a display (MuJoCo through EGL)."""
    from .record import RecordError, env_fps, headless_gl, record_frames, write_video

    headless_gl()
    from .agent import Agent
    from .checkpoint import CheckpointError
    from .tasks import get_task

    try:
        if out.suffix not in (".mp4", ".gif"):
            raise RecordError(f"{out}: the file name must end in .mp4 or .gif")
        model = Agent.load(checkpoint, device="cpu")
        task = get_task(env or model.task or "")
        say = lambda i, ret: click.echo(f"episode {i}: return {ret:.2f}", err=True)  # noqa: E731
        frames = record_frames(model, task.make_env, episodes, seed=seed, deterministic=not stochastic, max_steps=max_steps, on_episode=say)
        path = write_video(frames, out, fps or env_fps(task.make_env))
    except (CheckpointError, UnknownNameError, RecordError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    click.echo(f"wrote {path}: {len(frames)} frames, {episodes} episode(s) of {task.id}")


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
    from .runs import new_run_dir

    if out is None:
        stem = Path(checkpoint.split(":", 1)[-1]).stem.replace("/", "-")
        out = new_run_dir(Path("runs") / f"{stem}-finetune-{env}")
    ctx.invoke(train, agent=None, env=env, out=out, steps=timesteps, seed=0, seeds=None, device=device, head=None,
               params=tuple(params) + ("online=true",), eval_freq=eval_freq, download=False, resume=Path(checkpoint), init=None,
               save_every=save_every, keep_checkpoints=None, no_progress=no_progress, loggers=None, threads=threads)


@main.command("select")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rules", default="bc,fqe", show_default=True, help="Offline rules: bc (the BC-loss rule), fqe (fitted Q evaluation).")
@click.option("--fqe-steps", type=click.IntRange(1, 1_000_000), default=2000, show_default=True, help="FQE fitting steps per checkpoint and seed.")
@click.option("--top-k", type=click.IntRange(min=0), default=None, help="BC-loss rule's rank (default: the official code's per dataset).")
@click.option("--json", "as_json", is_flag=True, help="Print selection.json instead of the tables.")
@_threads_option
def select(run_dir: Path, rules: str, fqe_steps: int, top_k: Optional[int], as_json: bool, threads: str) -> None:
    """Rank a run's saved checkpoints (train --save-every N --keep-checkpoints K) without the simulator: the BC-loss
    rule and fitted Q evaluation, with each pick's regret where the run has online evaluations at those steps.
    Writes RUN_DIR/selection.json."""
    import json as _json

    from .fqe import FQEConfig
    from .select_job import SelectError, select_run, selection_table

    try:
        with _threads(threads, lambda m: click.echo(m, err=True)):
            res = select_run(run_dir, [r.strip() for r in rules.split(",") if r.strip()], FQEConfig(steps=fqe_steps), top_k)
    except (SelectError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    click.echo(_json.dumps(res, indent=1) if as_json else "\n".join(selection_table(res)))


@main.command()
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--rows", default="reference,exact,exact_x5,approx,eval,reduced", show_default=True,
              help="Comma-separated subset of rows; 'recipes' (not in the default) times every shipped recipe's training step and its predict for one observation, 'ensemble' "
                   "Diffusion-QL with ten critics (-p critic=ensemble-q), 'export' the evaluation policy exported to ONNX and run "
                   "by onnxruntime (the export extra), 'samplers' predict with a T 50 head by ddpm, dpm-solver++ and ddim and the edp "
                   "recipe's step; 'reduced' "
                   "repeats the chosen exact, exact_x5, eval and recipes rows with reduced-precision products: TF32 on a GPU, "
                   "bf16 on a CPU with bf16 units (-p matmul_precision).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Calls per timed block (eval rows at least 20, five-seed rows a fifth); default: blocks sized to fill --seconds.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget of the timed rounds when --steps is not given [90; with set-up and warm-up about two minutes].")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed blocks per row, taken round-robin across rows; each row reports the median block.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per row.")
@_threads_option
def bench(device: str, rows: str, steps: Optional[int], seconds: Optional[float], repeats: int, as_json: bool, threads: str) -> None:
    """Gradient steps/s at Hopper sizes: reference vs exact vs 5 seeds vs approx, and the evaluation path."""
    from .bench.throughput import format_table, run_benchmark, to_json_rows

    known = {"reference", "exact", "exact_x5", "approx", "eval", "reduced", "recipes", "ensemble", "export", "samplers"}
    wanted = [r.strip() for r in rows.split(",") if r.strip()]
    bad = [r for r in wanted if r not in known]
    if bad:
        _fail(ValueError(f"--rows: unknown row(s) {bad}; choose from {sorted(known)}"))
    try:
        with _threads(threads, lambda m: click.echo(m, err=True)):
            result = run_benchmark(device, steps=steps, repeats=repeats, rows=wanted, seconds=seconds,
                                   progress=lambda m: click.echo(m, err=True))
    except ValueError as exc:
        _fail(exc)
    if as_json:
        for r in to_json_rows(result):
            click.echo(json.dumps(r))
    else:
        click.echo(format_table(result))


@main.group()
@click.option("--index", default=None, metavar="PATH_OR_URL",
              help="Catalogue to read: a path or http(s)/file URL of an index.yaml [$DQLTOOLKIT_ZOO_INDEX, else the shipped one].")
@click.pass_context
def zoo(ctx: click.Context, index: Optional[str]) -> None:
    """Pretrained checkpoints: list, inspect, download (verified by SHA-256), evaluate. Fine-tune one with
    `dqltoolkit train --init zoo:<id> --env <task>`."""
    ctx.obj = {"index": index}


def _metrics_text(metrics: dict) -> str:
    shown = []
    for k, v in metrics.items():
        if k == "episodes":
            continue
        shown.append(f"{k.replace('_', ' ')} {v:.1%}" if k.endswith("_share") else f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return ", ".join(shown)


@zoo.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per entry.")
@click.pass_context
def zoo_list(ctx: click.Context, as_json: bool) -> None:
    """The catalogue's entries: agent, task, metrics, size, where each lives (shipped file, URL or Hub repo)
    and whether the file is here already."""
    from .zoo import cached_path, default_index, load_index

    index = ctx.obj["index"]
    try:
        entries = load_index(index)
    except ZooError as exc:
        _fail(exc)
    if not entries:
        click.echo(f"no entries in {index or default_index()}")
        return
    if not as_json:
        click.echo("| id | agent | task | metrics | size | lives | here |\n|---|---|---|---|---:|---|---|")
    for e in entries.values():
        # (an entry on the Hub is in the Hub's cache once used: `zoo download` fetches it, offline mode then serves it)
        here = "shipped" if e.shipped else "Hub cache" if e.kind == "hf" else ("cached" if cached_path(e).is_file() else "download")
        lives = "file" if e.shipped else e.location + (f" ({e.filename})" if e.filename else "")
        if as_json:
            click.echo(json.dumps({**e.to_dict(), "here": here}))
        else:
            click.echo(f"| {e.id} | {e.agent} | {e.task} | {_metrics_text(dict(e.metrics))} | {e.size / 1e6:.2f} MB | {lives} | {here} |")


@zoo.command(name="info")
@click.argument("entry_id")
@click.pass_context
def zoo_info(ctx: click.Context, entry_id: str) -> None:
    """Everything the catalogue records about ENTRY_ID (how it was trained, its metrics, where it lives)."""
    import yaml

    from .zoo import cached_path, get_entry

    try:
        e = get_entry(entry_id, ctx.obj["index"])
    except ZooError as exc:
        _fail(exc)
    doc = e.to_dict()
    if e.kind == "url":
        doc["cached"] = str(cached_path(e)) if cached_path(e).is_file() else None
    click.echo(yaml.safe_dump(doc, sort_keys=False).rstrip())


@zoo.command(name="download")
@click.argument("entry_id")
@click.option("--force", is_flag=True, help="Download again even if a verified copy is cached.")
@click.pass_context
def zoo_download(ctx: click.Context, entry_id: str, force: bool) -> None:
    """Fetch ENTRY_ID into the cache (the Hub's for an entry on the Hub), verify its size and SHA-256, print its local path."""
    from .sources import fetch_entry

    try:
        click.echo(str(fetch_entry(entry_id, ctx.obj["index"], force=force)))
    except ZooError as exc:
        _fail(exc)


@zoo.command(name="evaluate")
@click.argument("entry_id")
@_evaluate_options
@_threads_option
@click.pass_context
def zoo_evaluate(ctx: click.Context, entry_id: str, env: Optional[str], episodes: Optional[int], seed: int, deterministic: bool, device: str,
                 as_json: bool, threads: str) -> None:
    """Download (if needed) and evaluate ENTRY_ID on its task, or on --env; compare with `zoo info`'s metrics
    (deterministic acting by default, --stochastic for the other mode)."""
    from .sources import fetch_entry

    try:
        path = fetch_entry(entry_id, ctx.obj["index"])
    except ZooError as exc:
        _fail(exc)
    with _threads(threads):
        _evaluate_checkpoint(str(path), env, episodes, seed, deterministic, device, as_json)


@zoo.command(name="entry")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "entry_id", required=True, help="The entry's id (e.g. diffusion-ql-hopper-medium-v2).")
@click.option("--url", default=None, help="Where the file will be downloaded from (relative: beside the index).")
@click.option("--file", "file_name", default=None, help="The file's name beside the index, for a checkpoint shipped with it.")
@click.option("--hf", "hf_repo", default=None, metavar="ORG/NAME[@REV]",
              help="The Hugging Face Hub repo the checkpoint was pushed to (`dqltoolkit hub push`), instead of --url or --file.")
@click.option("--agent", default=None, help="Recipe name [the run's config.yaml beside the checkpoint].")
@click.option("--results", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The run's results.json (its final evaluation) or `dqltoolkit evaluate --json` output: the entry's metrics.")
@click.option("--description", default="", help="A sentence for the entry's description field.")
@click.option("--command", "train_command", default=None, help="The command that trained it, recorded under trained.command.")
def zoo_entry(checkpoint: Path, entry_id: str, url: Optional[str], file_name: Optional[str], hf_repo: Optional[str], agent: Optional[str],
              results: Optional[Path], description: str, train_command: Optional[str]) -> None:
    """Print the index entry (YAML) that publishes CHECKPOINT: digest, size, task, steps, versions, metrics."""
    import yaml

    from .checkpoint import CheckpointError
    from .zoo import make_entry

    try:
        entry = make_entry(checkpoint, entry_id, url=url, file=file_name, hf=hf_repo, agent=agent, description=description,
                           results=json.loads(results.read_text()) if results else None,
                           trained={"command": train_command} if train_command else None)
    except (ZooError, CheckpointError, FileNotFoundError) as exc:
        _fail(exc)
    click.echo(yaml.safe_dump([entry], sort_keys=False, width=1000).rstrip())


@main.group()
def hub() -> None:
    """Share checkpoints on the Hugging Face Hub: push a run (checkpoint, recipe, metrics, model card); load
    one anywhere a checkpoint path goes with hf:ORG/NAME[@revision] (SHA-256 checked against the card).
    Needs `pip install 'dqltoolkit[hub]'`; HF_TOKEN, HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE apply."""


@hub.command(name="push")
@click.argument("source", type=str, metavar="RUN_DIR_OR_CHECKPOINT")
@click.option("--repo", default=None, metavar="[ORG/]NAME",
              help="Hub model repo [{agent}-{task}]; without ORG/, your own namespace.")
@click.option("--revision", default=None, help="Branch to push to (created from main if missing) [main].")
@click.option("--private", is_flag=True, help="Create the repo private (a repo that exists keeps its visibility).")
@click.option("--agent", default=None, help="Recipe name for the card and the repo name [the run's config.yaml].")
@click.option("--message", default=None, help="Commit message.")
@click.option("--video", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A recording (`dqltoolkit record`, .mp4 or .gif) to upload as replay.mp4/.gif and show in the card.")
@click.option("--dry-run", is_flag=True, help="Print the model card and the files; upload nothing.")
def hub_push(source: str, repo: Optional[str], revision: Optional[str], private: bool, agent: Optional[str], message: Optional[str],
             video: Optional[Path], dry_run: bool) -> None:
    """Upload a run folder's checkpoint (or a checkpoint file, or zoo:<id>) with its recipe, metrics and a model card."""
    from .checkpoint import CheckpointError
    from .hub import HubError, prepare_push, push

    try:
        if dry_run:
            bundle = prepare_push(source, repo, agent, revision, video=video)
            click.echo(bundle.card)
            click.echo(f"would upload to {bundle.repo_id}: {', '.join(sorted(bundle.files))}", err=True)
            return
        res = push(source, repo, revision=revision, private=private, agent=agent, message=message, video=video)
    except (HubError, ZooError, CheckpointError, FileNotFoundError) as exc:
        _fail(exc)
    click.echo(f"pushed {', '.join(res.files)} to {res.repo_id}@{res.revision} (commit {res.commit[:12]})")
    click.echo(f"load it with dqltoolkit.load(\"hf:{res.repo_id}{'@' + res.revision if res.revision != 'main' else ''}\")")


@hub.command(name="download")
@click.argument("ref", metavar="hf:ORG/NAME[@REVISION]")
@click.option("--force", is_flag=True, help="Download again even if the Hub cache has it.")
def hub_download(ref: str, force: bool) -> None:
    """Fetch a repo's checkpoint into the Hub cache, verify its SHA-256 against the card, print its path."""
    from .hub import HubError, resolve_hf

    try:
        click.echo(str(resolve_hf(ref, force=force)))
    except HubError as exc:
        _fail(exc)


@main.group()
def dataset() -> None:
    """Build, list and inspect datasets. NAME is any form `train --env` takes: a task id (hopper-medium-v2,
    mujoco/hopper/medium-v0), minari:<id> or a local Minari id (dqltoolkit/hopper/medium-v0), d4rl:<file.hdf5>."""


_BUILD_ENVS = ("hopper", "halfcheetah", "walker2d")


def _build_target(target: str) -> Tuple[str, Optional[list]]:
    """``(env, levels or None)`` for `dataset build TARGET`: an env name, or a dataset name whose catalogue
    entry says how it is built (its ``build`` command)."""
    from .tasks import get_task

    if target in _BUILD_ENVS:
        return target, None
    try:
        task = get_task(target)
    except UnknownNameError as exc:
        raise ValueError(f"dataset build: {target!r} is neither an env ({', '.join(_BUILD_ENVS)}) nor a dataset name: {exc}") from None
    command = task.dataset.get("build")
    if not command:
        raise ValueError(f"dataset build: {target!r} ({task.id}) cannot be built here"
                         + (" (its data only comes from Minari's servers: --download)" if not task.buildable else ""))
    words = command.split()
    return words[words.index("build") + 1], words[words.index("--levels") + 1].split(",")


@dataset.command(name="build")
@click.argument("target", metavar="ENV_OR_NAME")
@click.option("--levels", default="random,medium,medium-replay,expert,medium-expert", show_default=True,
              help="Levels to build (for an env; a dataset NAME picks its own level; expert levels train the full --budget).")
@click.option("--algo", type=click.Choice(["sac", "tqc"]), default="sac", show_default=True,
              help="Behaviour-policy learner: SB3 SAC or sb3-contrib TQC.")
@click.option("--budget", type=int, default=300_000, show_default=True, help="Behaviour-policy training env steps at most.")
@click.option("--transitions", type=int, default=100_000, show_default=True, help="Transitions collected per level (D4RL: 1M).")
@click.option("--chunk", type=int, default=10_000, show_default=True, help="Env steps between checkpoints and evaluations.")
@click.option("--gradient-steps", type=int, default=1, show_default=True, help="Gradient steps per env step (fewer: cheaper).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the behaviour-policy training and the data collection.")
@click.option("--format", "data_format", type=click.Choice(["hdf5", "arrow"]), default="hdf5", show_default=True,
              help="Minari storage format of the written datasets.")
@click.option("--overwrite", is_flag=True, help="Rebuild levels that already exist.")
def dataset_build(target: str, levels: str, algo: str, budget: int, transitions: int, chunk: int, gradient_steps: int, seed: int,
                  data_format: str, overwrite: bool) -> None:
    """Train behaviour policies on Gymnasium MuJoCo and write D4RL-style Minari datasets (resumable).
    ENV_OR_NAME: hopper, halfcheetah or walker2d (with --levels), or one dataset's name (hopper-medium-v2,
    mujoco/hopper/medium-v0, minari:dqltoolkit/hopper/medium-v0)."""
    from .data.builder import BuildConfig, build, build_dir

    try:
        env, named_levels = _build_target(target)
        wanted = [x.strip() for x in levels.split(",") if x.strip()]
        given = click.get_current_context().get_parameter_source("levels") == click.core.ParameterSource.COMMANDLINE
        if named_levels is not None and given and wanted != named_levels:
            raise ValueError(f"dataset build: {target!r} is the {','.join(named_levels)} level; --levels {levels} disagrees "
                             f"(build levels of an env with `dqltoolkit dataset build {env} --levels ...`)")
        cfg = BuildConfig(env=env, levels=named_levels or wanted, algo=algo, budget=budget, transitions=transitions,
                          chunk=chunk, gradient_steps=gradient_steps, seed=seed, data_format=data_format)
        click.echo(f"building {env} {cfg.levels} (work folder {build_dir(cfg)})", err=True)
        res = build(cfg, say=lambda m: click.echo(m, err=True), overwrite=overwrite)
    except ValueError as exc:
        _fail(exc)
    click.echo("| level | dataset id | episodes | transitions | behaviour return | normalised |\n|---|---|---:|---:|---:|---:|")
    for level, r in res.items():
        click.echo(f"| {level} | {r['dataset_id']} | {r['episodes']} | {r['transitions']} | {r['mean_return']:.1f} | {r['normalized_score']:.1f} |")


def _data_status(name: str) -> str:
    """One line: where a name's data is (which local Minari dataset, which file), or how to get it."""
    import os

    from .data.minari_source import is_local
    from .tasks import get_task

    task = get_task(name)
    spec = task.dataset
    section = f" [recipe section {task.recipe_section}]" if task.recipe_section else ""
    if spec["source"] == "minari":
        ids = [spec["dataset_id"]] + ([spec["local_id"]] if spec.get("local_id") else [])
        here = [d for d in ids if is_local(d)]
        if here:
            return f"{name}: Minari dataset {here[0]} (local){section}"
        from .data.levels import build_time_estimate

        how = f"`{spec['build']}` ({build_time_estimate(spec['build'])})" if spec.get("build") else "--download (needs a network)"
        return f"{name}: missing ({' / '.join(ids)}); get it with {how}{section}"
    if spec["source"] == "d4rl_hdf5":
        path = os.path.expanduser(spec["path"])
        return f"{name}: D4RL file {path} ({'present' if os.path.isfile(path) else 'missing'}){section}"
    return f"{name}: generated in memory ({spec['source']}){section}"


@dataset.command(name="list")
@click.argument("names", nargs=-1, metavar="[NAME]...")
def dataset_list(names: Tuple[str, ...]) -> None:
    """Local Minari datasets (MINARI_DATASETS_PATH) and the tasks that use them; with NAMEs, where each
    one's data is or the command that builds it."""
    from .data.d4rl_hdf5 import DatasetError
    from .data.minari_source import minari_root

    try:
        if names:
            for name in names:
                click.echo(_data_status(name))
            return
        import minari

        root = minari_root()
        local = minari.list_local_datasets()
    except (DatasetError, UnknownNameError) as exc:
        _fail(exc)
    if not local:
        click.echo(f"no datasets in {root}")
    from .tasks import tasks_using_dataset

    for did, meta in sorted(local.items()):
        users = tasks_using_dataset(did)
        click.echo(f"{did}: {meta.get('total_episodes')} episodes, {meta.get('total_steps')} steps"
                   + (f" (tasks {', '.join(users)})" if users else ""))


@dataset.command(name="info")
@click.argument("name")
def dataset_info(name: str) -> None:
    """What a dataset NAME resolves to (task, recipe section, evaluation env) and its data's metadata."""
    import os

    from .data.d4rl_hdf5 import DatasetError
    from .data.minari_source import open_minari
    from .tasks import get_task

    try:
        task = get_task(name)
        spec = task.dataset
        click.echo(f"task: {task.id}")
        click.echo(f"recipe section: {task.recipe_section or '(none: the recipe defaults)'}")
        click.echo(f"evaluation env: {task.eval_env or '(none: ' + (task.eval_note or 'not given') + ')'}")
        if spec["source"] == "minari":
            ids = [spec["dataset_id"]] + ([spec["local_id"]] if spec.get("local_id") else [])
            ds = open_minari(ids, build_hint=spec.get("build"))
        elif spec["source"] == "d4rl_hdf5":
            import h5py

            path = os.path.expanduser(spec["path"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"D4RL file {path} does not exist")
            with h5py.File(path, "r") as f:
                for k in sorted(f.keys()):
                    if isinstance(f[k], h5py.Dataset):
                        click.echo(f"{k}: {f[k].shape} {f[k].dtype}")
            return
        else:
            click.echo(f"data: generated in memory ({spec['source']}, {', '.join(f'{k}={v}' for k, v in spec.items() if k != 'source')})")
            return
    except (DatasetError, UnknownNameError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    meta = ds.storage.metadata
    for k in ("dataset_id", "total_episodes", "total_steps", "env_spec", "ref_min_score", "ref_max_score", "algorithm_name", "description", "data_format"):
        if k in meta:
            v = meta[k]
            click.echo(f"{k}: {v if len(str(v)) < 200 else str(v)[:200] + '...'}")


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
    from .sweep import run_sweep, summary_lines
    from .sweep_spec import SweepError, load_sweep

    say = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        spec = load_sweep(sweep_file)
        doc = run_sweep(spec, out, address=address, resume=resume, cpus=num_cpus, say=say)
    except (SweepError, ConfigError, UnknownNameError) as exc:
        _fail(exc)
    except KeyboardInterrupt:  # a signal before Tune took over (while Ray started): sweep.json marks what ran
        click.echo(f"interrupted; continue with: dqltoolkit sweep {sweep_file} --out {out} --resume", err=True)
        sys.exit(130)
    for line in summary_lines(doc):
        click.echo(line)
    statuses = [e["status"] for e in doc["trials"].values()]
    wall = doc["attempts"][-1].get("wall_seconds")
    click.echo(f"{statuses.count('finished')} finished, {statuses.count('stopped_early')} stopped early, {statuses.count('error')} failed, "
               f"{statuses.count('interrupted')} interrupted" + (f" in {wall:.1f}s" if wall is not None else "") + f": {Path(out) / 'sweep.json'}")
    if "interrupted" in statuses:
        click.echo(f"continue with: dqltoolkit sweep {sweep_file} --out {out} --resume", err=True)
        sys.exit(130)
    if "error" in statuses:
        sys.exit(1)


@main.command(name="list")
@click.argument("what", type=click.Choice(["agents", "heads", "critics", "objectives", "samplers", "envs", "zoo", "keys", "all"]),
                default="all")
def list_(what: str) -> None:
    """Show registered agents (recipes), heads, critics, objectives, samplers, envs (tasks), zoo entries and recipe
    keys: WHAT picks one section (default all)."""
    from . import agent as _agent  # noqa: F401  (registers built-in parts)
    from .config import recipe_names
    from .heads.samplers import SAMPLERS
    from .registry import CRITICS, HEADS, OBJECTIVES
    from .tasks import task_ids
    from .zoo import load_index

    sections = {
        "agents": recipe_names,
        "heads": HEADS.names,
        "critics": CRITICS.names,
        "objectives": OBJECTIVES.names,
        "samplers": SAMPLERS.names,
        "envs": task_ids,
        "zoo": lambda: sorted(load_index()),
    }
    for name, fn in sections.items():
        if what in (name, "all"):
            click.echo(f"{name}: {', '.join(fn())}")
    if what == "keys":
        from .config import describe_keys

        owner = None
        for spec in describe_keys():
            if spec.owner != owner:
                owner = spec.owner
                click.echo(f"\n[{owner}]" + (" (every agent)" if owner in ("core", "runtime") else ""))
            bounds = f", one of {', '.join(map(str, spec.choices))}" if spec.choices else (f", >= {spec.min:g}" if spec.min is not None else "")
            click.echo(f"  {spec.name:20s} {spec.type.__name__:5s} {spec.default!s:12s} {spec.help}{bounds}")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
