"""What keeps a run's work safe from faults: stop signals acted on only between two gradient steps, a lock on
the run folder, and the finiteness check before every save. Why defer signals: a ``KeyboardInterrupt`` raised
inside a step (after it drew from the members' generators) leaves a state no uninterrupted run had, so a run
resumed from it would differ; recording the signal and checking it after each step avoids that."""

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
    """A stop signal arrived; raised between two gradient steps (``step`` whole steps done: a resume is exact). A
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


class _SignalGuard:
    """Installs the subclass's ``_handle`` for ``signals`` on entry, restores the previous handlers on exit. Only in
    the main thread (Python runs handlers there only); an ignored signal (``nohup``) stays ignored; an embedded
    interpreter that refuses handlers keeps its own."""

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        self._previous: Dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    try:
                        self._previous[s] = signal.signal(s, self._handle)
                    except (ValueError, OSError):
                        pass
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


class DeferredSignals(_SignalGuard):
    """While active, SIGINT and SIGTERM are recorded and ``check`` raises :class:`TrainingInterrupted` for the first;
    a second one before the check raises ``KeyboardInterrupt`` at once (the user does not want to wait)."""

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
    """The name of an agent's first network or optimiser tensor that holds NaN or Inf, else None."""
    return next((name for name, t in agent_state(agent).items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


class BeforeTermination(_SignalGuard):
    """While active, SIGTERM first runs ``action(signum)``, then does what it would have done without the guard. For
    work that must be closed before the process goes (a W&B run killed outside the learn loop would lose its record)."""

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
    """An exclusive ``flock`` on ``<out>/.lock`` for a run's lifetime, so two runs never write into one folder; it dies
    with the process (even on SIGKILL), so a stale file never blocks a later run. No lock without ``fcntl`` (Windows)."""

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
