"""The learning loop: gradient steps with SB3 callbacks, logging, a progress bar, divergence and signals.

``Agent.learn`` runs it; the ``train`` job (training.py) runs it through ``learn``. It holds no run folder
and no recipe: only the agent it is given.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .faults import DeferredSignals
from .tasks import get_task


class TrainingDiverged(RuntimeError):
    """A loss became NaN/Inf or exploded; raised within ``DIVERGENCE_CHECK_EVERY`` steps (or at the next log
    step or save) with the step and the metric. From the train job, ``checkpoint`` is the last finite
    checkpoint (None if the run kept none) and the message names it."""

    checkpoint: Optional[Path] = None


DIVERGENCE_LIMIT = 1e8
#: diagnostics also logged per seed when a run trains several (offline model selection ranks each seed's
#: own checkpoints by its BC loss: dqltoolkit/selection.py)
PER_SEED_METRICS = ("bc_loss",)


def _convert_callback(callback):
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback

    if callback is None:
        return None
    if isinstance(callback, list):
        return CallbackList([_convert_callback(c) for c in callback])
    return callback if isinstance(callback, BaseCallback) else ConvertCallback(callback)


def log_metrics(agent, step: int) -> Dict[str, float]:
    """Pull the accumulated diagnostics (one host sync), log their member means, check for divergence."""
    metrics = agent.pop_metrics()
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        if not np.all(np.isfinite(v)) or (k.endswith("loss") and np.any(np.abs(v) > DIVERGENCE_LIMIT)):
            raise TrainingDiverged(f"training diverged at step {step}: {k} = {v.tolist()} (members {agent.seeds})")
        out[f"train/{k}"] = float(v.mean())
        agent.logger.record(f"train/{k}", float(v.mean()))
        if k in PER_SEED_METRICS and v.size > 1:
            for s, x in zip(agent.seeds, v.reshape(-1)):
                agent.logger.record(f"train/{k}_seed{s}", float(x))
    agent.logger.record("time/step", step)
    return out


DIVERGENCE_CHECK_EVERY = 50  # steps between reads of the on-device non-finite flag (one host sync each)


def _nonfinite_flag(info: Mapping[str, torch.Tensor], acc: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Accumulate, on the device and without a sync, whether any diagnostic of this step is NaN or Inf:
    ``sum * 0`` is 0 for finite values and NaN otherwise, and NaN stays in the running sum."""
    if not info:
        return acc
    flag = torch.cat([v.detach().reshape(-1).float() for v in info.values()]).sum() * 0.0
    return flag if acc is None else acc.add_(flag)


def run_learning(agent, total_steps: int, callback=None, log_interval: Optional[int] = None, progress_bar: bool = False,
                 collector=None) -> None:
    """``total_steps`` gradient steps with SB3-style callbacks; losses are synced only every ``log_every``.

    Divergence (NaN/Inf) is noticed within ``DIVERGENCE_CHECK_EVERY`` steps from an on-device flag, and at every
    log step. SIGINT and SIGTERM (main thread only) stop the run between two steps, after that step's callbacks,
    by raising :class:`~dqltoolkit.faults.TrainingInterrupted`: the agent then holds exactly ``num_timesteps``
    whole steps. ``collector`` (online fine-tuning, dqltoolkit/online.py) steps the envs before each gradient step."""
    log_every = int(log_interval or agent.config.log_every)
    check_every = max(1, min(log_every, DIVERGENCE_CHECK_EVERY))
    cb = _convert_callback(callback)
    if cb is not None:
        cb.init_callback(agent)
        cb.on_training_start(locals(), globals())
    bar = None
    if progress_bar:
        bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, mininterval=0.5)
    t0, last, done = time.perf_counter(), 0, 0
    flag: Optional[torch.Tensor] = None
    guard = DeferredSignals()
    try:
        with guard:
            for i in range(total_steps):
                if collector is not None:
                    collector.step()
                info = agent.train_step()
                done = i + 1
                flag = _nonfinite_flag(info, flag)
                if bar is not None and done % 50 == 0:
                    bar.update(50)
                step = agent.num_timesteps
                final = i == total_steps - 1
                logging = step % log_every == 0 or final or guard.pending is not None
                if flag is not None and (logging or done % check_every == 0) and not bool(torch.isfinite(flag)):
                    log_metrics(agent, step)  # raises TrainingDiverged naming the metric
                    raise TrainingDiverged(f"training diverged by step {step}: a training diagnostic became NaN or Inf (members {agent.seeds})")
                if logging:
                    m = log_metrics(agent, step)
                    elapsed = time.perf_counter() - t0
                    agent.logger.record("time/steps_per_s", (done - last) / max(elapsed, 1e-9))
                    if collector is not None:
                        agent.logger.record("time/env_steps", collector.env_steps)
                        ret = collector.pop_episode_returns()
                        if ret is not None:
                            agent.logger.record("rollout/ep_rew_mean", ret)
                    t0, last = time.perf_counter(), done
                    agent.logger.dump(step)
                    if bar is not None:
                        bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in m.items() if k.endswith("loss")}, refresh=False)
                if cb is not None:
                    cb.update_locals(locals())
                    if cb.on_step() is False:
                        break
                guard.check(step)
    finally:
        if bar is not None:
            bar.update(done - bar.n)  # the steps really done: an interrupted run's bar stops where the run did
            bar.close()
        if cb is not None:
            cb.on_training_end()


def ensure_dataset(agent) -> None:
    """Give a loaded agent its task's dataset when it has none, keeping the observation statistics its
    networks were trained with; an agent with neither gets an error saying what to call."""
    if agent.buffer is not None:
        return
    if agent.task is None:
        raise RuntimeError("no dataset: call agent.set_dataset(table) first, or build the agent with "
                           "Agent.from_task(recipe, task) (a checkpoint that names its task loads it by itself)")
    agent.set_dataset(get_task(agent.task).load_dataset(), refit_obs_stats=False)
