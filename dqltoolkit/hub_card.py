"""The model card (``README.md``) that ``dqltoolkit hub push`` writes: Hub metadata plus a readable page.

Why these fields: ``library_name``, ``tags`` and ``pipeline_tag`` list the model with other offline-RL models;
``model-index`` holds the evaluation in huggingface_sb3's convention (a ``mean_reward`` of ``mean +/- std``), plus
the mean return, normalised score and, in ``args``, the episodes, seeds and steps behind them. The ``dqltoolkit``
section records the checkpoint's SHA-256 and size: ``hf:`` loads nothing whose digest differs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from .config import load_recipe
from .tasks import get_task


class _Dumper(yaml.SafeDumper):
    """Plain YAML for the Hub's metadata parser and for people: repeated values written out, no &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_HEAD_TAGS = {"diffusion": "diffusion-policy", "gaussian": "gaussian-policy", "cvae": "cvae-policy",
              "deterministic": "deterministic-policy"}


def _dataset(task_id: str) -> Dict[str, Any]:
    """What the task trains on: a Minari dataset id, a D4RL file name or the bandit's generator settings."""
    try:
        task = get_task(task_id)
    except Exception:  # a task this installation does not know: the card still names it
        return {"id": task_id, "description": "", "eval_env": None, "args": {}}
    spec = dict(task.dataset)
    source = spec.pop("source")
    dataset_id = spec["dataset_id"] if source == "minari" else spec["path"].rsplit("/", 1)[-1] if source == "d4rl_hdf5" else source
    args = {k: v for k, v in spec.items() if k not in ("dataset_id", "path", "build")}
    return {"id": dataset_id, "description": task.description, "eval_env": task.eval_env, "args": args}


def _metrics(evaluation: Mapping[str, Any], args: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows: List[Tuple[str, str, Any]] = []  # (type, name, value)
    if "mean_return" in evaluation:
        mean, std = float(evaluation["mean_return"]), float(evaluation.get("std_return", 0.0))
        rows += [("mean_reward", "mean_reward", f"{mean:.2f} +/- {std:.2f}"), ("mean_return", "Mean return", round(mean, 4))]
    if "normalized_score" in evaluation:
        rows.append(("normalized_score", "Normalised score (D4RL: 100 = expert, 0 = random)", round(float(evaluation["normalized_score"]), 2)))
    if "best_mode_share" in evaluation:
        rows.append(("best_mode_share", "Share of policy samples on the best reward mode", round(float(evaluation["best_mode_share"]), 4)))
    return [{"type": t, "name": name, "value": value, "verified": False, "args": args} for t, name, value in rows]


def _train_command(agent: str, task: str, doc: Mapping[str, Any], run_config: Mapping[str, Any], trained: Mapping[str, Any]) -> str:
    """The card's training command; its ``-p key=value`` make it train what was pushed (none for an unknown recipe)."""
    if trained.get("command"):
        return str(trained["command"])
    seeds = list(doc.get("seeds", [])) or [0]
    seed = f"--seed {seeds[0]}" if len(seeds) == 1 else f"--seeds {','.join(map(str, seeds))}"
    start = f"--init {run_config['init']}" if run_config.get("init") else f"--agent {agent}"
    try:
        recipe = load_recipe(agent, task)[0].to_dict()
    except Exception:
        recipe = {}
    ours = doc.get("config", {})
    overrides = "".join(f" -p {k}={ours[k]}" for k in ours if k in recipe and k != "steps" and ours[k] != recipe[k])
    return f"dqltoolkit train {start} --env {task} --steps {int(doc.get('num_timesteps', 0))} {seed}{overrides}"


def model_card(*, repo_id: str, model: str, agent: str, task: str, doc: Mapping[str, Any], checkpoint_name: str, sha256: str, size: int,
               evaluation: Mapping[str, Any], trained: Mapping[str, Any], run_config: Mapping[str, Any], description: str,
               files: List[str], replay: Optional[str] = None) -> str:
    """The whole README.md; ``repo_id`` is what users load (``ORG/NAME`` or ``ORG/NAME@revision``)."""
    repo_id = repo_id if "/" in repo_id else f"OWNER/{repo_id}"  # a dry run's card: the Hub fills in the owner at push time
    at = "" if "@" in repo_id else "@<revision>"
    config = doc.get("config", {})
    data = _dataset(task)
    seeds, steps = list(doc.get("seeds", [])), int(doc.get("num_timesteps", 0))
    versions = doc.get("versions", {})
    tags = ["dqltoolkit", "reinforcement-learning", "offline-reinforcement-learning", "offline-rl"]
    for tag in (_HEAD_TAGS.get(config.get("head", "")), agent, task, data["eval_env"]):
        if tag and tag not in tags:
            tags.append(tag)
    meta: Dict[str, Any] = {"library_name": "dqltoolkit", "pipeline_tag": "reinforcement-learning", "tags": tags}
    init = str(run_config.get("init") or "")
    base_model = init[3:].split("@", 1)[0] if init.startswith("hf:") else None
    if base_model:
        meta["base_model"] = base_model
    metrics = _metrics(evaluation, {"episodes": int(evaluation.get("episodes", 0)), "seeds": seeds, "steps": steps})
    if metrics:
        dataset = {"type": data["id"], "name": task, **({"args": dict(data["args"])} if data["args"] else {})}
        meta["model-index"] = [{"name": model, "results": [{
            "task": {"type": "reinforcement-learning", "name": "Offline reinforcement learning"},
            "dataset": dataset, "metrics": metrics}]}]
    meta["dqltoolkit"] = {"checkpoint": checkpoint_name, "sha256": sha256, "size": int(size), "format": doc.get("format"),
                          "format_version": doc.get("format_version"), "agent": agent, "task": task, "dataset": data["id"],
                          "head": config.get("head"), "critic": config.get("critic"), "objective": config.get("objective"),
                          "steps": steps, "seeds": seeds, "versions": dict(versions)}
    lines = ["---", yaml.dump(meta, Dumper=_Dumper, sort_keys=False, width=1000).rstrip(), "---", "", f"# {agent} on {task}", "",
             f"A **{agent}** agent (policy head `{config.get('head')}`, critic `{config.get('critic')}`, objective "
             f"`{config.get('objective')}`) trained offline with dqltoolkit on **{task}**"
             + (f": {data['description']}" if data["description"] else "") + f". Dataset: `{data['id']}`.", ""]
    if description:
        lines += [description, ""]
    if replay:  # (the Hub renders a repo-relative image or video in the card)
        lines += [f"![the policy acting: {replay}]({replay})" if replay.endswith(".gif") else
                  f'<video src="{replay}" controls autoplay loop muted width="480"></video>', ""]
    lines += ["## Evaluation", ""]
    if evaluation:
        lines += ["| metric | value |", "|---|---:|"]
        if "mean_return" in evaluation:
            lines.append(f"| mean return | {float(evaluation['mean_return']):.4f} +/- {float(evaluation.get('std_return', 0.0)):.4f} |")
        if "normalized_score" in evaluation:
            lines.append(f"| normalised score | {float(evaluation['normalized_score']):.2f} |")
        for key in ("best_mode_share", "off_data_share"):
            if key in evaluation:
                lines.append(f"| {key.replace('_', ' ')} | {float(evaluation[key]):.1%} |")
        lines += ["", f"Over {int(evaluation.get('episodes', 0))} episodes per seed, seeds {seeds}, after {steps} gradient steps "
                  "(the training run's final evaluation).", ""]
    else:
        lines += [f"Not evaluated at push time; run `dqltoolkit evaluate hf:{repo_id}`.", ""]
    lines += ["## How it was trained", "", "```bash", _train_command(agent, task, doc, run_config, trained), "```", "",
              f"{steps} gradient steps, seeds {seeds}"
              + (f", {trained['train_seconds']} s of training" if trained.get("train_seconds") else "")
              + ". Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ". `config.yaml` holds the resolved recipe "
              "(every setting, after the task's section and `-p` overrides).", "", "## How to load it", "",
              "```bash", "pip install 'dqltoolkit[hub]'", "```", "", "```python", "import dqltoolkit", "",
              f'model = dqltoolkit.load("hf:{repo_id}")' + (f'  # or "hf:{repo_id}{at}"' if at else ""),
              "action, _ = model.predict(obs)", "```", "", "```bash", f"dqltoolkit evaluate hf:{repo_id}",
              f"dqltoolkit train --init hf:{repo_id} --env {task} --steps 2000   # fine-tune", "```", "",
              "The checkpoint holds JSON and safetensors only: loading it runs no code (no pickle). dqltoolkit loads it only "
              "after its SHA-256 matches the one in this card's metadata; downloads go through the Hugging Face cache, and "
              "`HF_HUB_OFFLINE=1` serves them from there.", "",
              "## Files", "", "| file | what |", "|---|---|"]
    what = {checkpoint_name: "the checkpoint (dqltoolkit.json + tensors.safetensors in a zip)", "config.yaml": "the resolved recipe",
            "results.json": "the run's final evaluation and timings", "metrics.csv": "training and evaluation metrics over steps",
            "README.md": "this card",
            **dict.fromkeys(("replay.mp4", "replay.gif"), "a recording of the policy acting (dqltoolkit record)")}
    lines += [f"| `{f}` | {what.get(f, '')} |" for f in files + ["README.md"]]
    lines += ["", f"SHA-256 of `{checkpoint_name}` ({size} bytes): `{sha256}`", ""]
    return "\n".join(lines)
