"""`evaluate`, `export` and `record`: a checkpoint acting."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from ..agent import Agent
from ..checkpoint import CheckpointError
from ..envs.bandit2d import mode_shares
from ..evaluation import check_episodes, describe
from ..evaluation import evaluate as run_eval
from ..export import ExportError, check_export, export_policy, read_metadata
from ..limits import LimitError, check_limit
from ..record import RecordError, env_fps, headless_gl, record_frames, write_video
from ..registry import UnknownNameError
from ..tasks import get_task
from ..training import sample_policy_actions
from . import _fail, _threads, _threads_option, main


def _positive_episodes(ctx: click.Context, param: click.Parameter, value: Optional[int]) -> Optional[int]:
    """Refuse --episodes below 1 (0 once fell back to the default silently) or over one vector env, before any fetch."""
    if value is not None and value < 1:
        raise click.BadParameter(f"{value} episodes: give at least 1 (leave --episodes out for the task's default)")
    try:
        return None if value is None else check_episodes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def evaluate_options(fn):
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


def evaluate_checkpoint(checkpoint: str, env: Optional[str], episodes: Optional[int], seed: int, deterministic: bool, device: str,
                         as_json: bool) -> dict:
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
@evaluate_options
@_threads_option
def evaluate(checkpoint: str, env: Optional[str], episodes: Optional[int], seed: int, deterministic: bool, device: str,
             as_json: bool, threads: str) -> None:
    """Evaluate CHECKPOINT (a path, zoo:<id> or hf:ORG/NAME) on a task's env (all episodes as one vector env).

    Acts deterministically by default, as SB3's evaluate_policy does; --stochastic draws actions as the
    stochastic policy does. The output says which mode was used."""
    with _threads(threads):
        evaluate_checkpoint(checkpoint, env, episodes, seed, deterministic, device, as_json)


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
    try:  # (before the checkpoint is fetched or the exporter imported)
        check_limit("--candidates", candidates or 0, 10_000, "the limit of the recipe key n_candidates")
        check_limit("--steps", steps or 0, 10_000, "the limit of the recipe key sample_steps")
    except LimitError as exc:
        _fail(exc)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    if out is None:
        out = Path(checkpoint).with_suffix(suffix) if ":" not in checkpoint else Path(checkpoint.split(":", 1)[1].replace("/", "-")).with_suffix(suffix)
    try:
        model = Agent.load(checkpoint, device="cpu")
        path = export_policy(model, out, fmt, steps=steps, candidates=candidates, deterministic=deterministic, sampler=sampler)
        check = check_export(model, path)
    except (CheckpointError, ExportError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
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
    headless_gl()
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
