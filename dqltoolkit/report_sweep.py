"""What ``dqltoolkit report`` reads of a sweep folder (the ``--out`` of ``dqltoolkit sweep``): the status of
each trial in ``sweep.json`` and the keys the sweep varied.

Why the report reads the book at all: a trial's run folder alone cannot tell a trial that failed, was
interrupted or was superseded (an Optuna sample drawn again after ``--resume``) from a broken folder, and
names a swept setting no differently from a recipe default; ``sweep.json`` knows both. Trials whose status
is not one of :data:`REPORTED` are listed as skipped with their status; ``OUT/tune/`` (Ray Tune's own
records) is never searched for runs. Ray is not needed: this reads JSON only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

#: the book of a sweep, in its ``--out`` folder
BOOK = "sweep.json"
#: Ray Tune's records inside a sweep folder: not run folders
TUNE_DIR = "tune"
#: statuses whose run folder holds a result the report uses (``stopped_early``: ASHA's, see docs/report.md)
REPORTED = ("finished", "stopped_early")
WHY = {
    "error": "the trial failed",
    "interrupted": "the sweep stopped before the trial ended (`dqltoolkit sweep --resume` runs it again)",
    "superseded": "Optuna drew a new sample in its place when the sweep resumed",
    "pending": "the trial has not run",
    "running": "the trial is still running (or the sweep's driver was killed)",
}


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
    """The trials of ``folder/sweep.json``, and the reason ('' when none) why it could not be read (its
    trials are then reported from their folders alone)."""
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
        params = e.get("params") if isinstance(e.get("params"), dict) else {}
        out.append(BookTrial(book=file.resolve(), name=str(name), status=e["status"], run_dir=(Path(folder) / e["run_dir"]).resolve(),
                             params=params, error=str(e.get("error") or "")))
    return out, ""


def book_of(run_dir: Path) -> Path | None:
    """The sweep folder a trial's run folder belongs to (``OUT/trials/<name>``), if any."""
    above = Path(run_dir).parent.parent
    return above if (above / BOOK).is_file() else None
