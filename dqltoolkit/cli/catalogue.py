"""`list`: what the registries and catalogues hold."""

from __future__ import annotations

import click

from ..config import describe_keys, recipe_names
from ..heads.samplers import SAMPLERS
from ..registry import CRITICS, HEADS, OBJECTIVES
from ..settings import bound_text
from ..tasks import task_ids
from ..zoo import load_index
from . import main


@main.command(name="list")
@click.argument("what", type=click.Choice(["agents", "heads", "critics", "objectives", "samplers", "envs", "zoo", "keys", "all"]),
                default="all")
def list_(what: str) -> None:
    """Show registered agents (recipes), heads, critics, objectives, samplers, envs (tasks), zoo entries and recipe
    keys: WHAT picks one section (default all)."""
    sections = {"agents": recipe_names, "heads": HEADS.names, "critics": CRITICS.names, "objectives": OBJECTIVES.names,
                "samplers": SAMPLERS.names, "envs": task_ids, "zoo": lambda: sorted(load_index())}
    for name, fn in sections.items():
        if what in (name, "all"):
            click.echo(f"{name}: {', '.join(fn())}")
    if what == "keys":
        owner = None
        for spec in describe_keys():
            if spec.owner != owner:
                owner = spec.owner
                note = {"core": " (every agent)", "runtime": " (every agent)", "sampling": " (every agent; heads with a reverse chain)",
                        "online": " (every agent; fine-tuning)"}.get(owner, "")
                click.echo(f"\n[{owner}]{note}")
            limits = [f"{op} {bound_text(v)}" for op, v in ((">=", spec.min), ("<=", spec.max)) if v is not None]
            bounds = f", one of {', '.join(map(str, spec.choices))}" if spec.choices else "".join(f", {b}" for b in limits)
            click.echo(f"  {spec.name:20s} {spec.type.__name__:5s} {spec.default!s:12s} {spec.help}{bounds}")
