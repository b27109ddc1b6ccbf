"""Every ```bash and ```python block of README.md runs as written, so the README cannot drift from the code.

The blocks run in order in one scratch folder that sees the repository's files (agents/, Makefile, ...)
through links, so what one block writes (runs/bandit/model.zip) is there for the next, and nothing is
written into the repository. ``dqltoolkit`` commands run in-process through click (the same entry point
as the installed script, without a second torch start-up per command); other lines run in bash.

What the test changes, mechanically, so that the whole README runs in about a minute:

- ``dqltoolkit train``: ``--steps`` becomes ``FAST_STEPS`` (added where absent), ``--eval-freq`` becomes
  ``FAST_EVAL_FREQ``, and the tiny network settings ``TINY`` are appended as ``-p`` overrides, except with
  ``--init`` or ``--resume`` (whose checkpoint fixes the network's sizes).
- ``dqltoolkit ablate``: ``--steps FAST_STEPS`` and ``TINY``.
- ``dqltoolkit bench``: ``--steps 2 --repeats 1`` (no timing is asserted).
- ``dqltoolkit evaluate`` / ``zoo evaluate``: ``--episodes`` becomes ``FAST_EPISODES`` (added where absent).
- Python blocks: the substitutions in ``PY_FAST`` (``learn(4000`` -> ``learn(40``, ...).
- ``make TARGET``: the target's recipe is read with ``make -n`` (so the README's target must exist) and
  its ``dqltoolkit`` lines run with the rules above; ``make test`` is only dry-run (it is this suite).
- ``source .venv/bin/activate``: the test puts its own ``dqltoolkit`` in place instead; the line is
  checked to name the folder that ``make setup`` creates.
- Commands in ``PARSE_ONLY`` (network, placeholder paths, tens of minutes of SAC) and commands on a
  D4RL-style task whose dataset is not built on this machine are parsed by click (options and choices
  must exist) but not run; the test reports them with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Tuple

import click
import pytest
import yaml
from click.testing import CliRunner

from dqltoolkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

FAST_STEPS = 4
FAST_EVAL_FREQ = 2
FAST_EPISODES = 20
TINY = ["T=3", "hidden=16", "critic_hidden=16", "time_dim=8", "batch_size=32", "n_candidates=4", "log_every=2"]
PY_FAST: List[Tuple[str, str]] = [
    (r"\.learn\(\s*\d+", ".learn(40"),
    (r"eval_freq\s*=\s*\d+", "eval_freq=20"),
]
PARSE_ONLY: List[Tuple[str, str]] = [
    (r"^dataset build\b", "builds datasets with tens of minutes of SAC training"),
    (r"--download\b", "downloads from the network (tests download nothing)"),
    (r"/path/to/", "a placeholder path"),
    (r"\bruns/x/", "a placeholder run folder"),
    (r"^hub\b|\bhf:", "talks to the Hugging Face Hub (tests/test_hub.py runs these against a local fake Hub)"),
    (r"^sweep\b", "starts Ray and trains a grid (tests/test_sweep.py runs sweeps on the embedded Ray and a two-node cluster)"),
]
D4RL_TASK = re.compile(r"--env\s+((?:hopper|halfcheetah|walker2d)-[a-z-]+-v\d)")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # README line of the opening fence


@dataclass
class Report:
    ran: List[str] = field(default_factory=list)
    parsed_only: List[Tuple[str, str]] = field(default_factory=list)


def readme_blocks(text: str) -> List[Block]:
    """The fenced blocks of a markdown text with their language and line; unknown languages included so
    that the caller can refuse them."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(m.group(1), "\n".join(body), start))
        i += 1
    return blocks


def command_lines(text: str) -> List[str]:
    """Shell lines of a bash block, backslash continuations joined, blank and comment-only lines dropped."""
    out, cur = [], ""
    for raw in text.splitlines():
        cur += raw.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip() and not cur.strip().startswith("#"):
            out.append(cur.strip())
        cur = ""
    return out


def _set_option(args: List[str], name: str, value: str, add: bool = True) -> List[str]:
    if name in args:
        args = list(args)
        args[args.index(name) + 1] = value
        return args
    return args + [name, value] if add else args


def fast_args(args: Sequence[str]) -> List[str]:
    """The fast variant of a ``dqltoolkit`` command's arguments (see the module docstring)."""
    args = list(args)
    if not args:
        return args
    tiny = [x for kv in TINY for x in ("-p", kv)]
    if args[0] == "train":
        args = _set_option(args, "--steps", str(FAST_STEPS))
        args = _set_option(args, "--eval-freq", str(FAST_EVAL_FREQ), add=False)
        if "--init" not in args and "--resume" not in args:
            head = args[args.index("--head") + 1] if "--head" in args else "diffusion"
            args += tiny if head == "diffusion" else [x for kv in TINY if not kv.startswith(("T=", "time_dim=")) for x in ("-p", kv)]
    elif args[0] == "ablate":
        args = _set_option(args, "--steps", str(FAST_STEPS)) + tiny
    elif args[0] == "bench":
        args = _set_option(_set_option(args, "--steps", "2"), "--repeats", "1")
    elif args[0] == "evaluate" or args[:2] == ["zoo", "evaluate"]:
        args = _set_option(args, "--episodes", str(FAST_EPISODES))
    return args


def parse_only(args: Sequence[str]) -> None:
    """Parse a command's arguments with click without running it: the subcommand, its options and their
    values must exist."""
    ctx = main.make_context("dqltoolkit", list(args), resilient_parsing=False)
    while isinstance(ctx.command, click.Group) and ctx.protected_args + ctx.args:
        rest = ctx.protected_args + ctx.args
        name, cmd, rest = ctx.command.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)


def _dataset_present(task_id: str) -> bool:
    from dqltoolkit.tasks import get_task

    try:
        get_task(task_id).load_dataset()
    except Exception:  # noqa: BLE001 -- any failure to load means there is nothing to run on
        return False
    return True


class ReadmeRunner:
    """Runs README blocks in ``workdir`` with the fast rules; raises AssertionError naming the README line
    of the first command or snippet that fails."""

    def __init__(self, workdir: Path, root: Path = ROOT) -> None:
        self.workdir, self.root, self.report = workdir, root, Report()

    def run_blocks(self, blocks: Sequence[Block]) -> Report:
        for b in blocks:
            if b.lang == "bash":
                for line in command_lines(b.text):
                    self.run_line(line, b.line)
            elif b.lang == "python":
                self.run_python(b)
            elif b.lang == "yaml":
                self.run_recipe(b)
            else:
                raise AssertionError(f"README.md:{b.line}: a ```{b.lang} block; the README test runs bash, python and yaml (recipe) blocks only")
        return self.report

    def run_recipe(self, b: "Block") -> None:
        """A recipe block: written to the file its first comment names (``# my_recipe.yaml: ...``) in the
        scratch folder and resolved for every task section it has, as ``train --agent`` would."""
        from dqltoolkit.config import resolve_recipe

        name = re.match(r"#\s*(\S+\.ya?ml)", b.text.strip())
        assert name, f"README.md:{b.line}: a yaml block must start with '# <file>.yaml' naming the recipe file"
        path = self.workdir / name.group(1)
        path.write_text(b.text)
        doc = yaml.safe_load(b.text)
        for task in [None] + [k for k in doc if k not in ("base", "default")]:
            try:
                resolve_recipe(str(path), task)
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"README.md:{b.line}: the recipe does not resolve for {task}: {exc}") from exc
        self.report.ran.append(f"recipe {path.name}")

    def run_line(self, line: str, where: int) -> None:
        words = shlex.split(line, comments=True)
        if not words:
            return
        if words[0] == "dqltoolkit":
            self.run_dqltoolkit(words[1:], line, where)
        elif words[0] == "make":
            self.run_make(words[1:], line, where)
        elif words[:2] in (["source", ".venv/bin/activate"], [".", ".venv/bin/activate"]):
            dry = subprocess.run(["make", "-n", "-B", "setup"], cwd=self.root, capture_output=True, text=True)
            assert dry.returncode == 0 and "-m venv .venv" in dry.stdout, \
                f"README.md:{where}: `make setup` does not create .venv:\n{dry.stdout}{dry.stderr}"
            self.report.parsed_only.append((line, "the test provides dqltoolkit itself"))
        elif words[0] == "hf":
            self.report.parsed_only.append((line, "logs in to the Hugging Face Hub (network)"))
        else:
            res = subprocess.run(["bash", "-e", "-c", line], cwd=self.workdir, capture_output=True, text=True)
            assert res.returncode == 0, f"README.md:{where}: `{line}` failed ({res.returncode}):\n{res.stdout}{res.stderr}"
            self.report.ran.append(line)

    def run_dqltoolkit(self, args: List[str], line: str, where: int) -> None:
        joined = " ".join(args)
        reason = next((why for pattern, why in PARSE_ONLY if re.search(pattern, joined)), None)
        task = D4RL_TASK.search(joined)
        if reason is None and task and not _dataset_present(task.group(1)):
            reason = f"the {task.group(1)} dataset is not built on this machine (dqltoolkit dataset build)"
        if reason is not None:
            try:
                parse_only(args)
            except click.exceptions.ClickException as exc:
                raise AssertionError(f"README.md:{where}: `{line}` does not parse: {exc.format_message()}") from exc
            self.report.parsed_only.append((line, reason))
            return
        fast = fast_args(args)
        cwd = os.getcwd()
        os.chdir(self.workdir)
        try:
            res = CliRunner().invoke(main, fast, catch_exceptions=True)
        finally:
            os.chdir(cwd)
        detail = f"{res.output}" + (f"\n{res.exception!r}" if res.exception and not isinstance(res.exception, SystemExit) else "")
        assert res.exit_code == 0, f"README.md:{where}: `{line}` (run as `dqltoolkit {' '.join(fast)}`) exited {res.exit_code}:\n{detail}"
        self.report.ran.append("dqltoolkit " + " ".join(fast))

    def run_make(self, args: List[str], line: str, where: int) -> None:
        assert len(args) == 1, f"README.md:{where}: `{line}`: the README test knows `make TARGET` only"
        dry = subprocess.run(["make", "-n", args[0]], cwd=self.root, capture_output=True, text=True)
        assert dry.returncode == 0, f"README.md:{where}: `{line}`: no such make target:\n{dry.stderr}"
        if args[0] == "test":
            assert "pytest" in dry.stdout, f"README.md:{where}: `make test` runs no pytest:\n{dry.stdout}"
            self.report.parsed_only.append((line, "the suite itself (dry-run only)"))
            return
        cli = [ln for ln in dry.stdout.splitlines() if re.match(r"^\S*/dqltoolkit\s", ln)]
        assert cli, f"README.md:{where}: `{line}`: the target runs no dqltoolkit command:\n{dry.stdout}"
        for ln in cli:
            self.run_dqltoolkit(shlex.split(ln)[1:], f"{line}: {ln}", where)

    def run_python(self, b: Block) -> None:
        code = b.text
        for pattern, repl in PY_FAST:
            code = re.sub(pattern, repl, code)
        cwd = os.getcwd()
        os.chdir(self.workdir)
        try:
            exec(compile(code, f"README.md:{b.line}", "exec"), {"__name__": "__readme__"})
        except Exception as exc:
            raise AssertionError(f"README.md:{b.line}: the python block fails: {exc!r}") from exc
        finally:
            os.chdir(cwd)
        self.report.ran.append(f"python block at README.md:{b.line}")


def scratch_folder(tmp: Path, root: Path = ROOT) -> Path:
    """A folder that sees the repository's top-level entries through links, but writes its own runs/."""
    for entry in root.iterdir():
        if entry.name not in {"runs", ".venv", ".git", ".pytest_cache", "build", "dist"}:
            (tmp / entry.name).symlink_to(entry)
    return tmp


def test_readme_blocks_are_bash_python_or_recipes():
    blocks = readme_blocks(README.read_text())
    assert {b.lang for b in blocks} == {"bash", "python", "yaml"}
    assert sum(b.lang == "python" for b in blocks) >= 1 and sum(len(command_lines(b.text)) for b in blocks if b.lang == "bash") >= 15


def test_fast_variants_are_mechanical():
    assert fast_args(["train", "--env", "bandit2d-v0", "--steps", "20000", "-p", "T=20"]) == [
        "train", "--env", "bandit2d-v0", "--steps", str(FAST_STEPS), "-p", "T=20", *[x for kv in TINY for x in ("-p", kv)]]
    assert fast_args(["train", "--env", "e", "--resume", "m.zip"]) == ["train", "--env", "e", "--resume", "m.zip",
                                                                       "--steps", str(FAST_STEPS)]
    assert fast_args(["evaluate", "m.zip", "--episodes", "1000", "--json"]) == ["evaluate", "m.zip", "--episodes", str(FAST_EPISODES),
                                                                                "--json"]
    assert fast_args(["bench"]) == ["bench", "--steps", "2", "--repeats", "1"]
    assert command_lines("a \\\n  b  # c\n# only a comment\n\nd") == ["a    b  # c", "d"]


def test_a_broken_readme_command_or_snippet_fails(tmp_path):
    """The harness itself: a misspelt option, an unknown subcommand and a failing snippet each raise,
    naming the README line; a parse-only command with a bad option fails too."""
    runner = ReadmeRunner(scratch_folder(tmp_path))
    cases = [
        Block("bash", "dqltoolkit list keyz", 3),
        Block("bash", "dqltoolkit evaluate m.zip --episode 3", 4),
        Block("bash", "dqltoolkit train --env hopper-medium-v2 --no-such-option", 5),
        Block("bash", "dqltoolkit dataset build hopper --levels random --budgett 1", 6),
        Block("python", "import dqltoolkit\naction = model.predict(obs)", 7),
        Block("bash", "false", 8),
    ]
    for b in cases:
        with pytest.raises(AssertionError, match=f"README.md:{b.line}"):
            runner.run_blocks([b])


def test_every_readme_block_runs(tmp_path, capsys):
    """The README's commands and snippets, in order, with the fast variants above (about a minute)."""
    runner = ReadmeRunner(scratch_folder(tmp_path))
    report = runner.run_blocks(readme_blocks(README.read_text()))
    assert (tmp_path / "runs" / "bandit" / "model.zip").is_file() and (tmp_path / "copy.zip").is_file()
    with capsys.disabled():
        print(f"\nREADME: ran {len(report.ran)} commands/snippets; not run: "
              + "; ".join(f"`{c}` ({why})" for c, why in report.parsed_only))
    assert len(report.ran) >= 15
