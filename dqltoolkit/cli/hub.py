"""`hub`: checkpoints on the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..checkpoint import CheckpointError
from ..hub import HubError, prepare_push, push, resolve_hf
from ..zoo import ZooError
from . import _failing, main


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
    with _failing(HubError, ZooError, CheckpointError, FileNotFoundError):
        if dry_run:
            bundle = prepare_push(source, repo, agent, revision, video=video)
            click.echo(bundle.card)
            click.echo(f"would upload to {bundle.repo_id}: {', '.join(sorted(bundle.files))}", err=True)
            return
        res = push(source, repo, revision=revision, private=private, agent=agent, message=message, video=video)
    click.echo(f"pushed {', '.join(res.files)} to {res.repo_id}@{res.revision} (commit {res.commit[:12]})")
    click.echo(f"load it with dqltoolkit.load(\"hf:{res.repo_id}{'@' + res.revision if res.revision != 'main' else ''}\")")


@hub.command(name="download")
@click.argument("ref", metavar="hf:ORG/NAME[@REVISION]")
@click.option("--force", is_flag=True, help="Download again even if the Hub cache has it.")
def hub_download(ref: str, force: bool) -> None:
    """Fetch a repo's checkpoint into the Hub cache, verify its SHA-256 against the card, print its path."""
    with _failing(HubError):
        click.echo(str(resolve_hf(ref, force=force)))
