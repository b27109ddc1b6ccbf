"""Every option of every command says what it does in --help (the newcomer's first reference)."""

import click
from click.testing import CliRunner

from dqltoolkit.cli import main


def _commands(cmd: click.Command, path: tuple = ("dqltoolkit",)):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, path + (name,))


def test_every_command_and_option_has_help():
    missing = []
    for path, cmd in _commands(main):
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {'/'.join(p.opts)}")
    assert missing == []
    assert len(list(_commands(main))) >= 14  # the walk reached the subcommands of zoo and dataset


def test_help_shows_the_evaluation_options_a_newcomer_asked_about():
    out = " ".join(CliRunner().invoke(main, ["evaluate", "--help"]).output.split())  # unwrapped
    for text in ("--episodes", "at least 1", "--deterministic / --stochastic", "SB3 evaluate_policy's default"):
        assert text in out, text
    assert "Seed of the one run" in CliRunner().invoke(main, ["train", "--help"]).output
