"""The ``dqltoolkit`` command line: the ``main`` group and what its commands share (errors, ``--threads``);
each command (or group of related commands) is a module of this package."""

from __future__ import annotations

import contextlib

import click
import torch

from ..threads import set_threads


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


@contextlib.contextmanager
def _failing(*errors: type):
    """Report the listed exceptions raised in the block as a one-line command error (``_fail``)."""
    try:
        yield
    except errors as exc:
        _fail(exc)


def _threads_option(fn):
    """``--threads`` for the commands that compute (train, evaluate, bench): see dqltoolkit/threads.py."""
    return click.option("--threads", default="auto", show_default=True, metavar="N|auto",
                        help="CPU threads for torch. auto: one per core less the cores other work keeps busy (a quarter-second "
                             "sample of CPU use); OMP_NUM_THREADS wins. On a shared machine give each concurrent job its share: on 2 busy "
                             "cores 1 thread trained 3-6x faster than 2.")(fn)


@contextlib.contextmanager
def _threads(spec: str, say=None):
    """Use ``spec`` threads for the command, the caller's count after it (tests run commands in-process)."""
    before = torch.get_num_threads()
    with _failing(ValueError):
        n, why = set_threads(spec)
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


# the commands, one module each (registered on `main` as they import)
from . import bench, catalogue, dataset, evaluate, hub, results, sweep, train, zoo  # noqa: E402,F401
