"""`dataset`: build, list and inspect datasets."""

from __future__ import annotations

import os
from typing import Optional, Tuple

import click

from ..data import builder
from ..data.builder import BuildConfig, build_dir
from ..data.d4rl_hdf5 import DatasetError
from ..data.levels import build_time_estimate
from ..data.minari_source import is_local, minari_root, open_minari
from ..registry import UnknownNameError
from ..tasks import get_task, tasks_using_dataset
from . import _fail, main


@main.group()
def dataset() -> None:
    """Build, list and inspect datasets. NAME is any form `train --env` takes: a task id (hopper-medium-v2,
    mujoco/hopper/medium-v0), minari:<id> or a local Minari id (dqltoolkit/hopper/medium-v0), d4rl:<file.hdf5>."""


def _build_target(target: str) -> Tuple[str, Optional[list]]:
    """``(env, levels or None)`` for `dataset build TARGET`: an env name, or a dataset name with a catalogue ``build`` command."""
    if target in builder.ENVS:
        return target, None
    try:
        task = get_task(target)
    except UnknownNameError as exc:
        raise ValueError(f"dataset build: {target!r} is neither an env ({', '.join(builder.ENVS)}) nor a dataset name: {exc}") from None
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
        res = builder.build(cfg, say=lambda m: click.echo(m, err=True), overwrite=overwrite)
    except ValueError as exc:
        _fail(exc)
    click.echo("| level | dataset id | episodes | transitions | behaviour return | normalised |\n|---|---|---:|---:|---:|---:|")
    for level, r in res.items():
        click.echo(f"| {level} | {r['dataset_id']} | {r['episodes']} | {r['transitions']} | {r['mean_return']:.1f} | {r['normalized_score']:.1f} |")


def _data_status(name: str) -> str:
    """One line: where a name's data is (which local Minari dataset, which file), or how to get it."""
    task = get_task(name)
    spec = task.dataset
    section = f" [recipe section {task.recipe_section}]" if task.recipe_section else ""
    if spec["source"] == "minari":
        ids = [spec["dataset_id"]] + ([spec["local_id"]] if spec.get("local_id") else [])
        here = [d for d in ids if is_local(d)]
        if here:
            return f"{name}: Minari dataset {here[0]} (local){section}"
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
    for did, meta in sorted(local.items()):
        users = tasks_using_dataset(did)
        click.echo(f"{did}: {meta.get('total_episodes')} episodes, {meta.get('total_steps')} steps"
                   + (f" (tasks {', '.join(users)})" if users else ""))


@dataset.command(name="info")
@click.argument("name")
def dataset_info(name: str) -> None:
    """What a dataset NAME resolves to (task, recipe section, evaluation env) and its data's metadata."""
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
