"""`zoo`: the catalogue of pretrained checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click
import yaml

from ..checkpoint import CheckpointError
from ..sources import fetch_entry
from ..zoo import ZooError, cached_path, default_index, get_entry, load_index, make_entry
from . import _failing, _threads, _threads_option, main
from .evaluate import evaluate_checkpoint, evaluate_options


@main.group()
@click.option("--index", default=None, metavar="PATH_OR_URL",
              help="Catalogue to read: a path or http(s)/file URL of an index.yaml [$DQLTOOLKIT_ZOO_INDEX, else the shipped one].")
@click.pass_context
def zoo(ctx: click.Context, index: Optional[str]) -> None:
    """Pretrained checkpoints: list, inspect, download (verified by SHA-256), evaluate. Fine-tune one with
    `dqltoolkit train --init zoo:<id> --env <task>`."""
    ctx.obj = {"index": index}


def _metrics_text(metrics: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.1%}" if k.endswith("_share") else f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items() if k != "episodes")


@zoo.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per entry.")
@click.pass_context
def zoo_list(ctx: click.Context, as_json: bool) -> None:
    """The catalogue's entries: agent, task, metrics, size, where each lives (shipped file, URL or Hub repo)
    and whether the file is here already."""
    index = ctx.obj["index"]
    with _failing(ZooError):
        entries = load_index(index)
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
    with _failing(ZooError):
        e = get_entry(entry_id, ctx.obj["index"])
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
    with _failing(ZooError):
        click.echo(str(fetch_entry(entry_id, ctx.obj["index"], force=force)))


@zoo.command(name="evaluate")
@click.argument("entry_id")
@evaluate_options
@_threads_option
@click.pass_context
def zoo_evaluate(ctx: click.Context, entry_id: str, env: Optional[str], episodes: Optional[int], seed: int, deterministic: bool, device: str,
                 as_json: bool, threads: str) -> None:
    """Download (if needed) and evaluate ENTRY_ID on its task, or on --env; compare with `zoo info`'s metrics
    (deterministic acting by default, --stochastic for the other mode)."""
    with _failing(ZooError):
        path = fetch_entry(entry_id, ctx.obj["index"])
    with _threads(threads):
        evaluate_checkpoint(str(path), env, episodes, seed, deterministic, device, as_json)


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
    with _failing(ZooError, CheckpointError, FileNotFoundError):
        entry = make_entry(checkpoint, entry_id, url=url, file=file_name, hf=hf_repo, agent=agent, description=description,
                           results=json.loads(results.read_text()) if results else None,
                           trained={"command": train_command} if train_command else None)
    click.echo(yaml.safe_dump([entry], sort_keys=False, width=1000).rstrip())
