"""A results record: one JSON object per (agent, task, seed) run, what a reviewer needs to recompute a results table or
check a rebuild of its data (docs/results/runs.json), small enough to keep in the repository where run folders (megabytes
of checkpoints) stay on the machine that trained them. ``dqltoolkit report runs.json`` reads it like run folders.

Keys (:data:`REQUIRED`): ``agent``, ``task``, ``seed``, ``dataset_transitions``, ``dataset_sha256``, ``command`` (the CLI
that reproduces the run), ``cpu``, ``evaluations`` (``[[step, normalised score]]``) and ``bc_loss`` (``[[step, value]]``,
the logged training BC loss); optional ``config`` (the resolved recipe), ``steps`` (the budget), ``steps_done``,
``dataset_score`` (the data's own mean return, normalised), ``wall_s``, ``code`` (the git commits its chunks ran),
``metric`` (``return`` when the task has no normalised score: the evaluations are then returns) and ``fqe``
(``[[step, value]]``: FQE's estimate of each kept checkpoint from ``dqltoolkit select``, the report's second offline rule).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REQUIRED = ("agent", "task", "seed", "dataset_transitions", "dataset_sha256", "command", "cpu", "evaluations", "bc_loss")
MAX_RECORDS = 100_000  # a record file larger than this is not a results table: refused before it is parsed further
MAX_BYTES = 256 << 20


class RecordError(ValueError):
    """A record file that cannot be read; the message names the file, the record and the field."""


def _curve(value: Any, where: str) -> List[List[float]]:
    if not isinstance(value, list):
        raise RecordError(f"{where}: expected a list of [step, value] pairs")
    out, last = [], -1
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)):
            raise RecordError(f"{where}[{i}]: expected [step, value], got {pair!r}")
        step, v = int(pair[0]), float(pair[1])
        if step <= last or not math.isfinite(v):
            raise RecordError(f"{where}[{i}]: steps must increase and values be finite, got {pair!r}")
        out.append([step, v])
        last = step
    return out


def read_records(path: Path | str) -> List[Dict[str, Any]]:
    """The records of ``path`` (a JSON list), each checked: every :data:`REQUIRED` key, curves as increasing steps."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise RecordError(f"{path}: {path.stat().st_size} bytes, over the {MAX_BYTES} a record file may have")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, list) or len(doc) > MAX_RECORDS:
        raise RecordError(f"{path}: expected a JSON list of at most {MAX_RECORDS} run records")
    out = []
    for i, rec in enumerate(doc):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise RecordError(f"{where}: expected an object")
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise RecordError(f"{where}: missing key(s) {missing}")
        if not isinstance(rec["seed"], int) or isinstance(rec["seed"], bool):
            raise RecordError(f"{where}: field 'seed' must be an integer, got {rec['seed']!r}")
        for key in ("agent", "task", "command", "cpu", "dataset_sha256"):
            if not isinstance(rec[key], str):
                raise RecordError(f"{where}: field {key!r} must be a string")
        rec = {**rec, **{k: _curve(rec[k], f"{where}, field {k!r}") for k in ("evaluations", "bc_loss")}}
        if not rec["evaluations"]:
            raise RecordError(f"{where}: field 'evaluations' is empty")
        if "fqe" in rec:
            rec["fqe"] = _curve(rec["fqe"], f"{where}, field 'fqe'")
        out.append(rec)
    return out


def write_records(records: Sequence[Dict[str, Any]], path: Path | str) -> Path:
    """Write ``records`` (sorted by task, agent, seed) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(records, key=lambda r: (r["task"], r["agent"], r["seed"]))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ordered, indent=1) + "\n")
    tmp.replace(path)
    return path


def curves_of_run(run_dir: Path, seeds: Sequence[int]) -> Dict[int, Dict[str, List[List[float]]]]:
    """Per seed, the ``evaluations`` (normalised score, else return: see ``metric``) and ``bc_loss`` of its metrics.csv."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        table = list(reader)
    key = "normalized_score" if any(h.startswith("eval/normalized_score") for h in header) else "mean_return"
    out: Dict[int, Dict[str, Any]] = {}
    for s in seeds:
        sfx = f"_seed{s}" if len(seeds) > 1 else ""
        out[s] = {}
        for name, col in {"evaluations": f"eval/{key}{sfx}", "bc_loss": f"train/bc_loss{sfx}"}.items():
            points: Dict[int, float] = {}
            for row in table:
                if row.get(col) not in (None, "") and row.get("time/step") not in (None, ""):
                    points[int(float(row["time/step"]))] = float(row[col])
            out[s][name] = [[k, points[k]] for k in sorted(points)]
        out[s]["metric"] = "normalized_score" if key == "normalized_score" else "return"
    return out


def record_for(run_dir: Path, seed: int, curves: Dict[str, List[List[float]]], *, agent: str, task: str, command: str, cpu: str,
               dataset: Dict[str, Any], config: Optional[Dict[str, Any]] = None, wall_s: Optional[float] = None,
               code: Optional[str] = None, fqe: Optional[List[List[float]]] = None) -> Dict[str, Any]:
    """One record from a run's curves for ``seed``; ``code``: the git commits its chunks ran; ``fqe``: :func:`fqe_of_run`."""
    done = curves["evaluations"][-1][0] if curves["evaluations"] else 0
    rec = {"agent": agent, "task": task, "seed": int(seed), "dataset_transitions": int(dataset["transitions"]),
           "dataset_sha256": dataset["sha256"], "command": command, "cpu": cpu, "evaluations": curves["evaluations"],
           "bc_loss": curves["bc_loss"], "steps_done": int(done)}
    metric = curves.get("metric", "normalized_score")
    optional = {"dataset_score": dataset.get("score"), "metric": None if metric == "normalized_score" else metric,
                "config": config, "steps": None if config is None else int(config.get("steps", done)),
                "wall_s": None if wall_s is None else round(float(wall_s), 1), "code": code or None, "fqe": fqe or None}
    rec.update((k, v) for k, v in optional.items() if v is not None)  # (in this order: the file keeps it)
    return rec


def fqe_of_run(run_dir: Path) -> Dict[int, List[List[float]]]:
    """Per seed, ``[[step, FQE value]]`` from the run's ``selection.json`` (``dqltoolkit select``); empty if unreadable."""
    try:
        doc = json.loads((Path(run_dir) / "selection.json").read_text())
        return {int(e["seed"]): [[int(r["step"]), float(r["fqe"])] for r in e["rows"] if r.get("fqe") is not None]
                for e in doc["seeds"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
