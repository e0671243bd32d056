"""How a run's process is stopped from outside: signals become ``Stopped``, and the run ends
KILLED with the signal named.

- SIGTERM (``kill``, ``timeout``, SLURM's time limit, ``scancel``, preemption) and SIGHUP (a
  closed terminal) raise ``Stopped`` in the main thread, so ``zorb.runner.job.run`` marks the
  run KILLED as it does for Ctrl-C.
- In a SLURM job started by submitit, also submitit's warning signal (SIGUSR2,
  ``hydra.launcher.signal_delay_s`` before the time limit, or on preemption): a zorb fit
  cannot resume from a checkpoint, so the job stops there instead of being requeued to
  start over, and the run ends KILLED with the reason.

SLURM ends a job with SIGTERM, then SIGKILL ``KillWait`` seconds later (30 by default):
``Stopped`` unwinds the job in that time. The first signal is the one recorded; later ones
(SLURM sends SIGTERM to the step's processes and srun forwards its own) are ignored. A signal arriving while a native call (one BLAS
product) runs is handled when it returns.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOPPED_BY = "zorb.stopped_by"
"""Tag of a KILLED run: the signal that stopped it (SIGTERM, SIGHUP, SIGUSR2, SIGINT)."""


class Stopped(BaseException):
    """The process received a stopping signal (a BaseException, as KeyboardInterrupt is: no
    ``except Exception`` on the way up swallows it)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(describe(signum))

    @property
    def exit_status(self) -> int:
        """The shell's status of a process ended by this signal."""
        return 128 + self.signum


def slurm_job() -> str | None:
    """``<job id>`` (``<array job id>_<task>`` for an array task) when running as a SLURM job."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def describe(signum: int) -> str:
    """The reason recorded for a run stopped by ``signum``."""
    name = signal.Signals(signum).name
    job = slurm_job()
    if job is None:
        return f"stopped by {name}"
    if signum == signal.SIGUSR2:
        return (f"stopped by {name}: SLURM job {job} reaches its time limit or is preempted "
                f"(submitit's warning signal)")
    return f"stopped by {name}: SLURM job {job} was cancelled, reached its time limit or was preempted"


def stop_reason(error: BaseException) -> str | None:
    """The signal's name when ``error`` means the run was stopped from outside (the run then
    ends KILLED), else None."""
    if isinstance(error, Stopped):
        return error.name
    if isinstance(error, KeyboardInterrupt):
        return "SIGINT"
    return None


def _raise_stopped(signum, frame) -> None:
    # SLURM signals every process of the step and srun forwards the signal too: the second
    # copy must not interrupt the recording of the first, so the rest are ignored from here
    for other in _signals():
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def _signals() -> tuple[int, ...]:
    stopping = (signal.SIGTERM, signal.SIGHUP)
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        stopping += (signal.SIGUSR2,)
    return stopping


@contextmanager
def catching_signals() -> Iterator[None]:
    """Turn stopping signals into ``Stopped`` while the block runs, then put the previous
    handlers back (main thread only; elsewhere Python allows no handlers, and this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in _signals()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
