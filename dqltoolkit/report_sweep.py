"""What ``dqltoolkit report`` reads of a sweep folder: each trial's status in ``sweep.json`` and the keys the sweep
varied, which a run folder alone cannot tell (a failed or superseded trial looks like a broken folder; a swept setting
like a recipe default). Ray is not needed: this reads JSON only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

BOOK = "sweep.json"  # the book of a sweep, in its --out folder
TUNE_DIR = "tune"  # Ray Tune's records inside a sweep folder: not run folders
REPORTED = ("finished", "stopped_early")  # statuses whose run folder holds a result the report uses (stopped_early: ASHA's)
WHY = {"error": "the trial failed", "pending": "the trial has not run",
       "interrupted": "the sweep stopped before the trial ended (`dqltoolkit sweep --resume` runs it again)",
       "superseded": "Optuna drew a new sample in its place when the sweep resumed",
       "running": "the trial is still running (or the sweep's driver was killed)"}


@dataclass
class BookTrial:
    """One trial of a sweep's book."""

    book: Path
    name: str
    status: str
    run_dir: Path
    params: Dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def skip_reason(self) -> str:
        why = WHY.get(self.status, "not a status the report reads")
        error = f": {self.error}" if self.error else ""
        return f"{self.book}: trial '{self.name}' has status '{self.status}' ({why}{error})"


def read_book(folder: Path) -> Tuple[List[BookTrial], str]:
    """The trials of ``folder/sweep.json``, and why it could not be read ('' if it could; else its trials are judged alone)."""
    file = Path(folder) / BOOK
    try:
        doc = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [], f"{file}: not readable JSON ({exc}); its trials' statuses are not used"
    trials = doc.get("trials") if isinstance(doc, dict) else None
    if not isinstance(trials, dict):
        return [], f"{file}: no field 'trials' (a mapping of trial names), so its trials' statuses are not used"
    out = []
    for name, e in trials.items():
        if not isinstance(e, dict) or not isinstance(e.get("status"), str) or not isinstance(e.get("run_dir"), str):
            return [], f"{file}: field 'trials.{name}' lacks a 'status' or 'run_dir' string, so its trials' statuses are not used"
        out.append(BookTrial(book=file.resolve(), name=str(name), status=e["status"], run_dir=(Path(folder) / e["run_dir"]).resolve(),
                             params=e["params"] if isinstance(e.get("params"), dict) else {}, error=str(e.get("error") or "")))
    return out, ""


def book_of(run_dir: Path) -> Path | None:
    """The sweep folder a trial's run folder belongs to (``OUT/trials/<name>``), if any."""
    above = Path(run_dir).parent.parent
    return above if (above / BOOK).is_file() else None
