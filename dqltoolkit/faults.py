"""What keeps a training run's work safe from faults: signals that stop a run only between two gradient
steps, a lock on the run folder, and the finiteness check every saved checkpoint passes first.

Why defer signals: a ``KeyboardInterrupt`` raised where Python happens to be (usually inside a step, after
it drew its batch and noise from the members' generators) leaves a state that no uninterrupted run ever
had, so a run resumed from it differs from one that was never stopped. A handler that only records the
signal, checked after each whole step, makes every interrupt checkpoint a state of the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import torch

from .checkpoint import agent_state

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class TrainingInterrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM) arrived; raised between two gradient steps, so the agent holds the
    state of a whole number of steps (``step``) and a run resumed from it continues exactly. A subclass of
    ``KeyboardInterrupt``, so code that catches Ctrl-C around ``learn`` keeps working."""

    checkpoint: Optional[Path] = None  # set by the train job: the interrupt checkpoint it saved (None: nothing saved)
    exact: bool = True  # False when a second signal stopped the run inside a step (a resumed run is then not bit-exact)
    message: str = ""  # the train job's account of what was saved where

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = int(signum), int(step)
        super().__init__(f"{signal_name(signum)} at step {step}")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _install(signals: Iterable[int], handler: Callable) -> Dict[int, object]:
    """Install ``handler`` for each of ``signals`` and return the handlers it replaced. Only in the main thread
    (Python runs handlers there only); a signal the process ignores (``nohup``, a background job) stays
    ignored; an embedded interpreter that refuses handlers keeps its own."""
    previous: Dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for s in signals:
        if signal.getsignal(s) is signal.SIG_IGN:
            continue
        try:
            previous[s] = signal.signal(s, handler)
        except (ValueError, OSError):
            pass
    return previous


class _SignalGuard:
    """Installs ``self._handle`` for ``signals`` on entry (see :func:`_install`), restores the previous
    handlers on exit: what both guards below share."""

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        self._previous: Dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._previous.update(_install(self.signals, self._handle))
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


class DeferredSignals(_SignalGuard):
    """Context manager: while active (main thread only, see :func:`_install`), SIGINT and SIGTERM are
    recorded instead of acted on; ``check`` raises :class:`TrainingInterrupted` for the first one. A
    second signal before the check means the user does not want to wait: it raises ``KeyboardInterrupt``
    at once, as without this guard."""

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS) -> None:
        super().__init__(signals)
        self.pending: Optional[int] = None

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 (the signal module's signature)
        if self.pending is not None:
            raise KeyboardInterrupt(f"second {signal_name(signum)}: stopping at once")
        self.pending = signum
        # os.write, not print: a handler may run while sys.stderr is half-way through a write
        os.write(2, f"\n{signal_name(signum)}: stopping after this gradient step (send it again to stop at once)\n".encode())

    def check(self, step: int) -> None:
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise TrainingInterrupted(signum, step)


def agent_nonfinite(agent) -> Optional[str]:
    """The name of an agent's first network or optimiser tensor (what a checkpoint would hold) that holds
    NaN or Inf, else None (one host sync per tensor)."""
    return next((name for name, t in agent_state(agent).items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


class BeforeTermination(_SignalGuard):
    """Context manager: while active (main thread only), SIGTERM first runs ``action(signum)``, then does what
    it would have done without this guard (end the process, or call the handler that was in place). For work
    that must be closed before the process goes: a W&B run's writer buffers what it was sent, so a run killed
    outside the learn loop (whose :class:`DeferredSignals` stop it between steps) would lose its record. The
    loop's own handler takes precedence while the loop runs; an ignored signal stays ignored."""

    def __init__(self, action: Callable[[int], None], signals: Iterable[int] = (signal.SIGTERM,)) -> None:
        super().__init__(signals)
        self.action = action

    def _handle(self, signum: int, frame) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        try:
            self.action(signum)
        finally:
            if callable(previous):
                previous(signum, frame)
            else:  # SIG_DFL: end the process by this signal, as without the guard
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)


class RunLockError(RuntimeError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive ``flock`` on ``<out>/.lock`` for a run's lifetime, so that two runs never write into
    one folder (they would interleave ``metrics.csv`` and overwrite each other's checkpoints). The lock
    dies with the process (even on SIGKILL), so a stale ``.lock`` file never blocks a later run. Where
    ``fcntl`` does not exist (Windows), no lock is taken."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / ".lock"
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise RunLockError(f"{self.path.parent} is in use by another dqltoolkit train (process {holder or 'unknown'} "
                               f"holds {self.path}); wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (removing it would race a waiting run)
            self._fd = None
