"""Watch and steer a running job from another thread: its progress, training metrics, Cancel.

A program that runs incasem's jobs in a worker thread (the napari plugin, a notebook) makes
a :class:`JobMonitor` and runs the job inside ``with watching(monitor):``. The job reports
to it: every blockwise job (:func:`incasem.blockwise.run_each`) the blocks done out of
all, training its iterations, loss and validation F1. Any thread reads the latest
state with :meth:`JobMonitor.state` (a copy; polling it from a GUI timer is safe) and
stops the job with :meth:`JobMonitor.cancel`: the job raises :class:`JobCancelled`
before its next block or iteration, after the running ones finish and are recorded, so
that the job resumes exactly as after Ctrl-C on the command line (``--resume``;
``incasem train --resume ID``). :class:`JobCancelled` is a :class:`KeyboardInterrupt`
for that reason: every clean-up path of Ctrl-C runs for it too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["JobCancelled", "JobMonitor", "JobState", "current_monitor", "watching"]


class JobCancelled(KeyboardInterrupt):
    """A job stopped by :meth:`JobMonitor.cancel`; it resumes as after Ctrl-C."""


@dataclass(frozen=True)
class JobState:
    """What a watched job has done so far.

    Attributes
    ----------
    step
        The current step's name (``predict run-12``, ``train run 12``); empty before the first.
    done, total
        Blocks or iterations done and planned in the current step.
    metrics
        The latest training values by name (``loss``, ``val_f1``, ``best_val_f1``) and the
        ``iteration`` they belong to; empty outside training.
    cancelled
        Whether a Cancel was asked for.
    """

    step: str = ""
    done: int = 0
    total: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    cancelled: bool = False


class JobMonitor:
    """Progress and Cancel of the jobs run inside ``with watching(monitor):`` (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._step, self._done, self._total = "", 0, 0
        self._metrics: dict[str, float] = {}

    def cancel(self) -> None:
        """Ask the job to stop before its next block or iteration (any thread)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a Cancel was asked for (jobs call this between units of work)."""
        if self._cancel.is_set():
            raise JobCancelled(f"cancelled during {self._step or 'the job'}")

    def started(self, step: str, total: int, done: int = 0) -> None:
        """A new step of ``total`` units begins, ``done`` of them already done (a resumed run)."""
        with self._lock:
            self._step, self._total, self._done = step, total, done

    def advanced(self, units: int = 1) -> None:
        """``units`` more units of the current step are done."""
        with self._lock:
            self._done += units

    def record(self, values: Mapping[str, float]) -> None:
        """Training values to show (merged into the latest ones)."""
        with self._lock:
            self._metrics.update(values)

    def state(self) -> JobState:
        """A consistent copy of the progress so far."""
        with self._lock:
            return JobState(self._step, self._done, self._total, dict(self._metrics), self._cancel.is_set())


_CURRENT: ContextVar[JobMonitor | None] = ContextVar("incasem_job_monitor", default=None)


@contextlib.contextmanager
def watching(monitor: JobMonitor) -> Iterator[JobMonitor]:
    """Report the jobs run in this block (in this thread or task) to ``monitor``."""
    token = _CURRENT.set(monitor)
    try:
        yield monitor
    finally:
        _CURRENT.reset(token)


def current_monitor() -> JobMonitor | None:
    """The monitor of the jobs run here, if a caller set one with :func:`watching`."""
    return _CURRENT.get()
