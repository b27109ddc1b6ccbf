"""Run folders and resumed runs. A fresh folder per run, since two runs in one would mix configs and models; a
reused ``--out`` loses a finished run's outputs (:data:`RUN_OUTPUTS`) and refuses an unfinished one (its checkpoint
is the only copy of that work). A resume may change only :data:`RESUME_SAFE_KEYS`."""

from __future__ import annotations

import json
import math
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .agent import load_agent
from .checkpoint import DOC_NAME, TENSORS_NAME, config_of, read_checkpoint

# what `train` writes in a run folder (glob patterns); a reused folder loses these and nothing else
RUN_OUTPUTS = ("model.zip", "model_seed*.zip", "model_step*.zip", "model_interrupted.zip", "model_latest.zip", "model_diverged.zip", "config.yaml",
               "metrics.csv", "progress.csv", "progress.json", "log.txt", "events.out.tfevents.*", "results.json", "learning_curves.png", "bandit*.png",
               "policy_samples*.npy", ".model*.zip.*.tmp")
UNFINISHED = ("model_interrupted.zip", "model_latest.zip")

# `-p` keys that may change when a run is resumed: they steer optimisation, targets, acting or logging, and
# every network keeps its shape and meaning. Every other key (the networks' composition and sizes, the
# data transforms the weights were fitted to) is refused; a key added later is refused until listed here.
RESUME_SAFE_KEYS = frozenset({
    "lr", "critic_lr", "batch_size", "grad_norm", "lr_decay", "ema_decay", "ema_start", "ema_every", "policy_delay",
    "reference_quirks", "eta", "q_grad", "q_grad_steps", "q_start", "eta_warmup", "perturbation", "mmd_kernel", "mmd_sigma",
    "mmd_samples", "mmd_threshold", "mmd_q", "gamma", "tau", "max_q_backup", "n_backup_samples", "backup_order", "target_noise",
    "target_noise_clip", "critic_reduce", "critic_lambda", "critic_lcb_k", "n_candidates", "sample_steps", "target_sample_steps",
    "sampler", "target_sampler", "q_sampler", "q_sample_steps", "default_sampler",
    "matmul_precision", "cuda_graphs", "log_every", "eval_freq", "eval_episodes", "eval_acting",
    "online", "online_offline_ratio", "online_buffer_size", "explore_noise",
})
RESUME_NETWORK_KEYS = frozenset({"head", "critic", "objective", "T", "beta_schedule", "hidden", "n_layers", "time_dim", "activation",
                                 "squash", "critic_hidden", "critic_layers", "n_critics"})


def new_run_dir(base: Path) -> Path:
    """Create a folder no other run uses (``mkdir``): ``base``, else ``base_<n>`` with n one more than the highest (from 2)."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(base.name) + r"_(\d+)$")
    while True:
        candidate = base
        if base.exists():
            taken = [int(m.group(1)) for p in base.parent.iterdir() if (m := pattern.match(p.name))]
            candidate = base.parent / f"{base.name}_{max(taken, default=1) + 1}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def prepare_run_folder(out: Path, keep: Sequence[Path] = (), say: Callable[[str], None] = lambda m: None,
                       replace_unfinished: bool = False) -> List[Path]:
    """Make ``out`` ready for a run (lock held): refuse an unfinished run there (unless ``replace_unfinished``), else
    remove an earlier run's outputs except ``keep`` (the checkpoint this run starts from); returns the removed files."""
    keep_resolved = {Path(k).resolve() for k in keep}
    earlier = sorted({p for pattern in RUN_OUTPUTS for p in Path(out).glob(pattern) if p.is_file()})
    files = [p for p in earlier if p.resolve() not in keep_resolved]
    unfinished = [p for p in files if p.name in UNFINISHED]
    if unfinished and not replace_unfinished and not (out / "results.json").is_file():
        names = ", ".join(p.name for p in unfinished)
        raise ValueError(f"{out} holds an unfinished run ({names}): continue it with --resume {unfinished[0]}, "
                         f"or choose another --out (or remove {names} to start over there)")
    for p in files:
        p.unlink()
    if files:
        say(f"{out} held an earlier run: removed its {', '.join(sorted(p.name for p in files))}")
    return files


@dataclass
class ResumePlan:
    """How a resumed run continues: the config it trains with, its steps, and what changed."""

    config: Dict[str, Any]
    done: int  # steps the checkpoint had done
    more: int  # steps this run does
    total: int  # the run's total (the cosine schedule's end)
    applied: Dict[str, Any]  # -p settings that changed
    notes: List[str]


def plan_resume(doc: Mapping[str, Any], source: str, overrides: Mapping[str, Any], steps: Optional[int]) -> ResumePlan:
    """Check ``-p`` overrides and ``--steps`` (more steps; None: up to the run's ``steps``) against a checkpoint's
    document. A run extended past its total gets the new end as its total: the lr cosine is stretched, never stuck at 0."""
    cfg = config_of(doc, source).to_dict()
    done = int(doc.get("num_timesteps", 0))
    applied, refused = {}, []
    for key, value in overrides.items():
        if key == "steps":
            refused.append("steps (with --resume, --steps N says how many more steps to train)")
        elif cfg.get(key) == value:
            continue
        elif key in RESUME_SAFE_KEYS:
            applied[key] = value
        else:
            why = "changes the networks" if key in RESUME_NETWORK_KEYS else "cannot change in a resumed run"
            refused.append(f"{key}={value!r} ({why}; the checkpoint has {cfg.get(key)!r})")
    if refused:
        raise ValueError(f"--resume {source}: refused: {'; '.join(refused)}. Settings a resumed run may change: "
                         f"{', '.join(sorted(RESUME_SAFE_KEYS))}; start a new run with --init {source} to change the others")
    total = int(cfg["steps"])
    more = total - done if steps is None else int(steps)
    if steps is None and more <= 0:
        # saves since run_unfinished was added say so; an older one is known by its name in a folder without results.json
        where = Path(source)
        older = where.name in UNFINISHED and where.parent.is_dir() and not (where.parent / "results.json").exists()
        if not ((doc.get("extra") or {}).get("run_unfinished") or older):
            raise ValueError(f"--resume {source}: the checkpoint has done all {total} steps of its run; pass --steps N to train N more")
        more = 0  # saved after its last step but before the run ended: the resume finishes it (evaluation, model, results)
    notes = [f"-p {k}={v!r} applied (the checkpoint had {cfg[k]!r})" for k, v in applied.items()]
    cfg.update(applied)
    if done + more > total:
        if cfg["lr_decay"]:
            def factor(step: int, end: int) -> float:
                return 0.5 * (1.0 + math.cos(math.pi * min(step, end) / max(end, 1)))

            notes.append(f"lr_decay: the run's total grows from {total} to {done + more} steps, so the cosine schedule now ends "
                         f"there: lr x{factor(done, total):.3g} at step {done} before, x{factor(done, done + more):.3g} now")
        total = done + more
    cfg["steps"] = total
    return ResumePlan(config=cfg, done=done, more=more, total=total, applied=applied, notes=notes)


def load_with_config(path: Path, config: Mapping[str, Any], device: str):
    """Load a checkpoint as if its document held ``config`` (same tensors), through the ordinary loader (its checks
    included) on a copy of the zip with the new document."""
    doc, _ = read_checkpoint(path)  # (validates the file before it is copied)
    if doc["config"] == dict(config):
        return load_agent(path, device=device)
    doc = {**doc, "config": dict(config)}
    with tempfile.TemporaryDirectory(prefix="dqltoolkit-resume-") as tmp:
        copy = Path(tmp) / Path(path).name
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(DOC_NAME, json.dumps(doc, default=float))
            z.writestr(TENSORS_NAME, src.read(TENSORS_NAME))
        try:
            return load_agent(copy, device=device)
        except ValueError as exc:  # (CheckpointError, ConfigError) name the user's file, not the temporary copy
            raise type(exc)(str(exc).replace(str(copy), str(path))) from None
