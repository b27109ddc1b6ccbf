"""``train --logger wandb``: the run's metrics, evaluations and resolved config as a Weights & Biases run.

Offline by default (unless ``WANDB_MODE`` is set), because logging should never need an account or a network:
the run goes to ``<out>/wandb/offline-run-*`` (or ``$WANDB_DIR``) for ``wandb sync``, and wandb sends no telemetry.
An SB3 output format (a ``KVWriter``) whose run outlives the SB3 logger, so the final evaluation reaches its
summary; the train job finishes it (:meth:`WandbOutputFormat.finish`) at the end, after an error and after
SIGINT/SIGTERM, because wandb's writer buffers and a run whose process just died keeps nothing (only SIGKILL
leaves it unfinished). ``wandb`` (``pip install 'dqltoolkit[wandb]'``) is imported only when a run asks for it.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from stable_baselines3.common.logger import KVWriter

INSTALL = "pip install 'dqltoolkit[wandb]'"
PROJECT = "dqltoolkit"  # the W&B project unless WANDB_PROJECT names one


def require_wandb():
    """The ``wandb`` module, or an error that names the extra to install."""
    try:
        import wandb
    except ImportError:
        raise ValueError(f"--logger wandb needs the wandb package: {INSTALL}") from None
    return wandb


def _number(value: Any) -> Optional[float]:
    """A value W&B can chart: a real number (numpy scalars and 0-d tensors included), else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return value  # type: ignore[return-value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy 0-d array, a 0-d tensor
        try:
            return float(value.item())
        except (TypeError, ValueError):
            return None
    return None


class WandbOutputFormat(KVWriter):
    """An SB3 output format that writes to a W&B run it starts with the resolved ``config`` (see the module's docstring);
    ``say``: where the note on the run's folder goes."""

    def __init__(self, out: Path, config: Mapping[str, Any], name: Optional[str] = None, tags: Sequence[str] = (),
                 job_type: str = "train", say: Callable[[str], None] = lambda m: None) -> None:
        wandb = require_wandb()
        mode = os.environ.get("WANDB_MODE", "").strip()  # the user's, else offline (no account, no network)
        if not mode:
            mode = "offline"  # process-wide too: a run made offline only by init(mode=...) still posts usage telemetry
            wandb.setup(settings=wandb.Settings(mode="offline"))
        # (read here and passed on: wandb reads its environment once per process, so a later run would miss changes)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, dir=os.environ.get("WANDB_DIR") or str(out),
                              mode=mode, name=name or Path(out).name, config=dict(config), tags=[str(t)[:64] for t in tags], job_type=job_type,
                              reinit="create_new", settings=wandb.Settings(console="off"))
        self.mode, self.finished = mode, False
        run_dir = self.run_dir
        if mode == "offline" and run_dir is not None:
            say(f"W&B run (offline): {run_dir}; upload it with `wandb sync {run_dir}`")
        elif mode == "online":
            say(f"W&B run: {getattr(self.run, 'url', None) or self.run.id}")

    @property
    def run_dir(self) -> Optional[Path]:
        """The run's own folder (``.../wandb/offline-run-*``), None for a disabled run."""
        files = getattr(self.run, "dir", None)
        return Path(files).parent if files and self.mode != "disabled" else None

    def write(self, key_values: Dict[str, Any], key_excluded: Dict[str, Any], step: int = 0) -> None:
        """One SB3 dump: the numeric values (not excluded for ``wandb``) at gradient step ``step``; values
        dumped at the same step (the diagnostics and that step's evaluation) land in one row."""
        row = {key: number for key, value in key_values.items()
               if "wandb" not in (key_excluded.get(key) or ()) and (number := _number(value)) is not None}
        if row and not self.finished:
            self.run.log(row, step=int(step))

    def close(self) -> None:
        """SB3 closes its formats when the learn loop ends; the run stays open for the final results (:meth:`finish`)."""

    def finish(self, results: Optional[Mapping[str, Any]] = None, exit_code: int = 0, **notes: Any) -> None:
        """Put ``results`` (the run's results.json: final evaluation, timings) and ``notes`` in the run's
        summary, then finish it with ``exit_code`` (0: done; 1: failed; 128 + N: stopped by signal N).
        Safe to call twice (the second call does nothing)."""
        if self.finished:
            return
        self.finished = True
        summary = {}
        for key, value in {**_flatten(results or {}), **notes}.items():
            number = _number(value)
            if number is not None and math.isfinite(number):
                summary[key] = number
            elif isinstance(value, (str, Path)):
                summary[key] = str(value)
        if summary:
            self.run.summary.update(summary)
        self.run.finish(exit_code=int(exit_code))


def _flatten(results: Mapping[str, Any], prefix: str = "final/") -> Dict[str, Any]:
    """results.json's values under ``final/`` (per seed: ``final/seed{s}/...``); lists of histories are left out."""
    flat: Dict[str, Any] = {}
    for key, value in results.items():
        if key == "evaluation" and isinstance(value, list):
            for e in value:
                if isinstance(e, Mapping):
                    for k, v in _flatten({k: v for k, v in e.items() if k != "seed"}, "").items():
                        flat[f"{prefix}seed{e.get('seed', 0)}/{k}"] = v
                    if len(value) == 1:
                        flat.update({f"{prefix}{k}": v for k, v in e.items() if k != "seed" and not isinstance(v, (Mapping, list))})
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif not isinstance(value, list):
            flat[f"{prefix}{key}"] = value
    return flat
