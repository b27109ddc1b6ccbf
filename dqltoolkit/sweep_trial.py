"""What runs inside Ray: a sweep trial (a Tune ``Trainable`` whose train job, in a daemon thread, parks after each periodic
evaluation, so a trial that ASHA stops is never half-way through a write) and the driver's hooks into Tune. This module
imports Ray; dqltoolkit/sweep.py imports it only once Ray is there."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import ray
import torch
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from .sweep_spec import ENTRY, Trial, complete_results, unfinished_checkpoint
from .training import train


def point_name(point: Dict[str, Any]) -> str:
    """A trial's folder name: given by the driver (grid, random), or made from what Optuna suggested."""
    return point.get("name") or Trial.named(point["agent"], point["task"], dict(point["params"]), hashed=True).name


def trial_name_creator(trial) -> str:
    return point_name(trial.config["point"])


class SweepTrial(tune.Trainable):
    """One trial: ``dqltoolkit.train`` of one agent on one task with its values, every seed at once."""

    def setup(self, config: Dict[str, Any]) -> None:
        sweep, point = config["sweep"], config["point"]
        self.budget = int(sweep["budgets"][f"{point['agent']}|{point['task']}"])
        self.run_dir = Path(sweep["out"]) / "trials" / point_name(point)
        self.kwargs = dict(agent=point["agent"], env=point["task"], out=self.run_dir, steps=self.budget, seeds=sweep["seeds"],
                           device="cuda" if sweep["gpu"] > 0 else "cpu", overrides={**sweep["overrides"], **point["params"]},
                           progress=False, verbose=False, replace_unfinished=True, save_every=int(sweep.get("save_every") or 0) or None)
        torch.set_num_threads(max(1, int(sweep["cpu"])))  # the trial's Ray CPUs are its torch threads
        self.node = ray.get_runtime_context().get_node_id()  # (sweep.json says where each trial ran)
        self._results: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._go = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _on_evaluation(self, entry: Dict[str, Any]) -> None:
        if entry["step"] >= self.budget:
            return  # the last one: the end of the run reports it, with results.json written
        self._results.put(("evaluation", entry))
        self._go.wait()  # parked until Tune wants the next result (never, if its scheduler stopped the trial)
        self._go.clear()

    def _train(self) -> None:
        try:
            res = train(**self.kwargs, on_evaluation=self._on_evaluation)
            self._results.put(("done", res.results))
        except BaseException as exc:  # noqa: BLE001  (handed to step(), which raises it in Tune's thread)
            self._results.put(("error", exc))

    def step(self) -> Dict[str, Any]:
        if self._thread is None:
            done = complete_results(self.run_dir, self.budget, self.kwargs["seeds"])
            if done is not None:  # the same point again (an Optuna repeat): its folder holds the finished run, kept as it is
                return self._final(done)
            ckpt = unfinished_checkpoint(self.run_dir, self.kwargs["seeds"])
            if ckpt is not None:  # a trial stopped mid-way (sweep killed, node lost): on from its last save, not from step 0
                self.kwargs.update(resume=ckpt, steps=None, seeds=None)
            self._thread = threading.Thread(target=self._train, name="dqltoolkit-trial", daemon=True)
            self._thread.start()
        else:
            self._go.set()
        kind, payload = self._results.get()
        if kind == "error":
            raise payload
        if kind == "evaluation":
            metrics = {k: float(payload[k]) for k in ("mean_return", "normalized_score") if k in payload}
            return {"step": int(payload["step"]), **metrics, ENTRY: json.dumps(payload), "node": self.node}
        return self._final(payload)

    def _final(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        """The last result: the run's results.json (its end-of-run evaluation), ``done``."""
        final = {k: payload[k] for k in ("mean_return", "normalized_score") if k in payload}
        if "normalized_score" not in final and payload.get("evaluation") and "normalized_score" in payload["evaluation"][0]:
            final["normalized_score"] = float(sum(e["normalized_score"] for e in payload["evaluation"]) / len(payload["evaluation"]))
        return {"step": int(payload["total_steps"]), **final, "final": True, "done": True, "node": self.node}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """A pointer to the run folder: the weights are its model*.zip, and :meth:`step` resumes from the newest."""
        Path(checkpoint_dir, "trial.json").write_text(json.dumps({"run_dir": str(self.run_dir)}))

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Nothing to restore here: :meth:`step` resumes from the run folder's newest checkpoint."""


class RecordingASHA(AsyncHyperBandScheduler):
    """Tune's ASHA, telling the sweep's book which trials it stopped before their budget (``stopped_early``)."""

    def __init__(self, book, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.book = book

    def on_trial_result(self, tune_controller, trial, result: Dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and not result.get("final"):
            self.book.stopped_early(trial_name_creator(trial), result)
        return decision


class BookCallback(Callback):
    """Keeps sweep.json current as trials start, report, finish and fail (a killed driver leaves it one event behind)."""

    def __init__(self, book) -> None:
        self.book = book

    def on_trial_start(self, iteration: int, trials: List, trial, **info: Any) -> None:
        self.book.started(trial_name_creator(trial), trial.config["point"])

    def on_trial_result(self, iteration: int, trials: List, trial, result: Dict, **info: Any) -> None:
        self.book.reported(trial_name_creator(trial), result)

    def on_trial_complete(self, iteration: int, trials: List, trial, **info: Any) -> None:
        self.book.completed(trial_name_creator(trial), trial.last_result or {})

    def on_trial_error(self, iteration: int, trials: List, trial, **info: Any) -> None:
        self.book.failed(trial_name_creator(trial), str(getattr(trial, "error_file", "") or ""))
