"""Give a job its share of the cores before JAX starts its CPU backend.

Parallel jobs that each run a full-width BLAS/XLA thread pool oversubscribe the machine:
on a 2-core box two such jobs made the least-squares factorizations 5-20x slower. A job
therefore pins itself to ``threads`` cores (``os.sched_setaffinity``: XLA and OpenBLAS size
their pools from the cores a process may use), caps the BLAS pools already loaded
(threadpoolctl) and sets the usual ``*_NUM_THREADS`` variables for libraries loaded later.
With one thread per job, XLA's Eigen pool is turned off as well.

Concurrent jobs of one sweep take different cores: each worker process claims a slot by
holding an ``fcntl`` lock on ``<sweep dir>/.cpu_slots/slot<k>`` for its lifetime.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from zorb.errors import ConfigError

log = logging.getLogger(__name__)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
SINGLE_THREAD_XLA_FLAG = "--xla_cpu_multi_thread_eigen=false"

_ORIGINAL_CORES: list[int] | None = None
_pinned: list[int] | None = None
_slot_handle = None
_limits = None


def available_cores() -> list[int]:
    """The cores this process could use before any pinning."""
    global _ORIGINAL_CORES
    if _ORIGINAL_CORES is None:
        _ORIGINAL_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else list(range(os.cpu_count() or 1))
    return _ORIGINAL_CORES


def joblib_workers(n_jobs: int, cores: int) -> int:
    """joblib's reading of ``n_jobs``: -1 all cores, -2 all but one, ..."""
    if n_jobs == 0:
        raise ConfigError("hydra.launcher.n_jobs must not be 0")
    return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)


def threads_per_job(setting, *, workers: int | None) -> int | None:
    """How many threads this job may use: ``setting`` if an int, else (``auto``) the cores
    shared out over ``workers`` parallel jobs; None means no limit."""
    if isinstance(setting, bool):
        raise ConfigError(f"threads must be 'auto' or a positive integer, got {setting!r}")
    if isinstance(setting, int):
        if setting < 1:
            raise ConfigError(f"threads must be 'auto' or a positive integer, got {setting!r}")
        return setting
    if setting not in ("auto", None):
        raise ConfigError(f"threads must be 'auto' or a positive integer, got {setting!r}")
    if workers is None:
        return None
    return max(1, len(available_cores()) // workers)


def _claim_slot(slot_dir: Path, slots: int) -> int:
    """Index of a free slot, held (locked) until this process exits."""
    global _slot_handle
    slot_dir.mkdir(parents=True, exist_ok=True)
    for k in range(slots):
        handle = open(slot_dir / f"slot{k}", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _slot_handle = handle
        return k
    return os.getpid() % slots


def pin(threads: int, *, slot_dir: Path | None = None, slots: int = 1) -> list[int]:
    """Restrict this process to ``threads`` cores (its slot's, when ``slot_dir`` is given).

    Idempotent: a worker process that runs several jobs keeps the cores it first took.
    Returns the cores in use.
    """
    global _pinned, _limits
    if _pinned is not None:
        return _pinned
    cores = available_cores()
    slot = _claim_slot(slot_dir, slots) if slot_dir is not None else 0
    start = (slot * threads) % len(cores)
    chosen = sorted({cores[(start + i) % len(cores)] for i in range(min(threads, len(cores)))})
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, chosen)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if threads == 1 and SINGLE_THREAD_XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA_FLAG}".strip()
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=threads)
    if _backend_started():
        log.warning("JAX's CPU backend started before this job was pinned to %d thread(s): "
                    "XLA keeps its full thread pool", threads)
    _pinned = chosen
    return chosen


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False
