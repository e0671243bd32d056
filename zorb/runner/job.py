"""Run one experiment from a composed config: the Hydra job around
``zorb.runner.experiment`` (what runs) and ``zorb.runner.records`` (what MLflow keeps of it).

    python run.py dataset=iris network=iris solver.rcond=1e-9 seed=3   (Hydra, run.py)
    zorb.runner.main(cfg)                                           (tests, other tools)

Every setting, and the store, is checked before any compute. A user-facing error
(``zorb.ZorbError``) marks the MLflow run FAILED and surfaces as ``RunFailed``: one sentence,
which Hydra prints without a traceback before exiting non-zero. In a multirun the other jobs
go on. SIGTERM, SIGHUP and Ctrl-C mark the run KILLED, print one line and exit with
128 + the signal's number (``zorb.runner.lifecycle``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from zorb.errors import ZorbError
from zorb.kernels import threads
from zorb.runner import callbacks as hydra_callbacks
from zorb.runner import lifecycle, records, store
from zorb.runner.experiment import run_experiment
from zorb.runner.records import FAILED, FINISHED, KILLED, hydra_config
from zorb.runner.settings import (CacheSettings, apply_limits, cache_settings, check_settings, get, load_plugins,
                                  plain_config, tracking_settings)

log = logging.getLogger("zorb.runner.job")


class RunFailed(CompactHydraException):
    """A run stopped by a user-facing error; ``str(error)`` is its one sentence."""


def main(cfg: DictConfig) -> dict[str, float]:
    """Run one experiment from a composed config; returns its metrics (what tests call).

    Raises ``RunFailed`` (one sentence) for a user-facing error, after marking the run
    FAILED; in a multirun, records this job's status for the sweep's parent run.
    """
    job = hydra_callbacks.current_job()
    status = FAILED
    try:
        metrics = run(cfg, job=job)
        status = FINISHED
        return metrics
    except (lifecycle.Stopped, KeyboardInterrupt):
        status = KILLED
        raise
    except ZorbError as error:
        log.error("%s", error)
        raise RunFailed(str(error)) from None
    finally:
        if job is not None:
            try:
                job.state.record_job(job.num, status)
            except Exception as error:  # the job's own outcome matters more than the bookkeeping
                log.error("could not record job %s in the sweep state: %s", job.num, error)


def cli(cfg: DictConfig) -> None:
    """``run.py``'s task: ``main``, with a single run's user-facing error printed as its
    one sentence (no traceback, no Hydra hint) and exit status 1. In a multirun the error
    goes to Hydra, which records the job as failed, runs the others and exits non-zero.

    SIGTERM, SIGHUP and Ctrl-C end the run KILLED, then the process with one line and
    status 128 + the signal's number; a sweep's worker process exits at once (its launcher
    may be gone), and stops its job by itself when the launcher is gone."""
    job = hydra_callbacks.current_job()
    worker = False
    try:
        with lifecycle.catch_signals():
            if job is not None:
                launcher = (job.state.read() or {}).get("launcher") or {}
                worker = bool(launcher) and launcher["pid"] != os.getpid()
                if worker:
                    lifecycle.watch_parent(int(launcher["pid"]), launcher.get("started"))
            main(cfg)
    except RunFailed as error:
        if job is not None:
            raise
        sys.stderr.write(f"{error}\n")
        sys.exit(1)
    except (lifecycle.Stopped, KeyboardInterrupt) as error:
        code = error.exit_status if isinstance(error, lifecycle.Stopped) else 130
        what = error if isinstance(error, lifecycle.Stopped) else "interrupted (SIGINT)"
        tracked = OmegaConf.select(cfg, "tracking.enabled", default=False) is True
        sys.stderr.write(f"{what}: the run is marked KILLED\n" if tracked else f"{what}\n")
        if worker:
            logging.shutdown()
            os._exit(code)
        sys.exit(code)


def run(cfg: DictConfig | Mapping, *, job: hydra_callbacks.SweepJob | None = None) -> dict[str, float]:
    """Run the experiment ``cfg`` describes (a composed config, see ``conf/config.yaml``).

    Raises ``zorb.ZorbError`` for a bad setting, missing data or a failed fit.
    """
    with lifecycle.catch_signals():
        return _run(cfg, job)


def _run(cfg: DictConfig | Mapping, job: hydra_callbacks.SweepJob | None) -> dict[str, float]:
    started = time.time()
    config = plain_config(cfg)
    tracked, uri, _ = tracking_settings(config)
    if tracked:
        store.check(store.resolve(uri), write=True)
    thread_tags = pin_threads(config, job)
    recorder = records.open_run(config, job, {**thread_tags, **lifecycle.process_tags()}) if tracked else None
    heartbeat = lifecycle.Heartbeat(recorder) if recorder is not None else None
    try:
        use_compile_cache(cache_settings(config))  # before anything compiles
        load_plugins(config)  # before the network spec is read: it may name the plugins' layers
        config = apply_limits(config)
        if recorder is not None:
            recorder.log_params(records.tracking.flatten(config))
            # startup: the interpreter, imports and Hydra's composition (in a sweep run in one
            # process, also the jobs before); store: opening the MLflow run and its params (and the
            # wait before the fit for a writer process still opening it, zorb/runner/records.py)
            timings = {"startup_seconds": started - process_start_time(), "store_seconds": time.time() - started}
        check_settings(config)  # a bad setting ends the open run FAILED, with the sentence as its error tag
        outcome = run_experiment(config, records.RunRecords(recorder, timings) if recorder is not None else None)
    except BaseException as error:
        if recorder is not None:
            heartbeat.stop()
            records.close_failed(recorder, error)
        raise
    if recorder is not None:
        heartbeat.stop()
        recorder.terminate(FINISHED)
        log.info("MLflow run %s FINISHED (%s)", recorder.run_id, recorder.artifact_uri)
    metrics = dict(outcome.metrics)
    for layer in outcome.report.layers:
        metrics.update(records.layer_metrics(layer))
    return metrics


def slurm_cpus() -> int | None:
    """The cores SLURM granted this task (``cpus_per_task``), or None outside SLURM."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def process_start_time() -> float:
    """When this process started (seconds since the epoch)."""
    import psutil

    return psutil.Process().create_time()


def use_compile_cache(cache: CacheSettings) -> None:
    """JAX's persistent compilation cache in ``<cache.folder>/jax`` (every program, however
    quick to compile: a small run's compiles are most of its time), or none."""
    import jax

    if not cache.compile:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    folder = Path(cache.folder) / "jax"
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pin_threads(config: Mapping, job) -> dict[str, str]:
    """Limit this job to its share of the cores before JAX starts (zorb/threads.py);
    returns tags describing the limit."""
    hydra_cfg = hydra_config()
    launcher = str(OmegaConf.select(hydra_cfg, "launcher._target_") or "") if hydra_cfg is not None else ""
    workers = None
    if job is not None and "joblib" in launcher:
        workers = threads.joblib_workers(int(hydra_cfg.launcher.n_jobs), len(threads.available_cores()))
        state = job.state.read()
        expected = state and state.get("expected_jobs")
        if expected:
            workers = min(workers, int(expected))
    slot_dir = job.state.folder / ".cpu_slots" if workers is not None else None
    granted = slurm_cpus()
    if workers is None and granted is not None and granted < len(threads.available_cores()):
        # a SLURM task whose cores SLURM did not bind (TaskPlugin=task/none): share the node's
        # cores out among the tasks on it, cpus_per_task each, as a joblib sweep does
        workers = len(threads.available_cores()) // granted
        if job is not None:
            slot_dir = job.state.folder / ".cpu_slots" / socket.gethostname()
    count = threads.threads_per_job(config.get("threads", "auto"), workers=workers)
    if count is None:
        return {"zorb.kernels.threads": "all", "zorb.cores": str(len(threads.available_cores()))}
    cores = threads.pin(count, slot_dir=slot_dir, slots=workers or 1)
    log.info("pinned to %d thread(s) on core(s) %s", count, ",".join(map(str, cores)))
    return {"zorb.kernels.threads": str(count), "zorb.cores": ",".join(map(str, cores))}
