"""Run one experiment from a composed config: the Hydra job around
``zorb.runner.experiment`` (what runs) and ``zorb.runner.records`` (what MLflow keeps of it).

    python run.py dataset=iris network=iris solver.rcond=1e-9 seed=3   (Hydra, run.py)
    zorb.runner.main(cfg)                                           (tests, other tools)

Every setting is validated before any compute. A user-facing error (``zorb.ZorbError``)
marks the MLflow run FAILED and surfaces as ``RunFailed``: one sentence, which Hydra
prints without a traceback before exiting non-zero. In a multirun the other jobs go on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from zorb.errors import ZorbError
from zorb.kernels import threads
from zorb.runner import callbacks as hydra_callbacks
from zorb.runner import records
from zorb.runner.experiment import run_experiment
from zorb.runner.records import FAILED, FINISHED, hydra_config
from zorb.runner.settings import apply_limits, get, load_plugins, plain_config

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
    goes to Hydra, which records the job as failed, runs the others and exits non-zero."""
    try:
        main(cfg)
    except RunFailed as error:
        if hydra_callbacks.current_job() is not None:
            raise
        sys.stderr.write(f"{error}\n")
        sys.exit(1)


def run(cfg: DictConfig | Mapping, *, job: hydra_callbacks.SweepJob | None = None) -> dict[str, float]:
    """Run the experiment ``cfg`` describes (a composed config, see ``conf/config.yaml``).

    Raises ``zorb.ZorbError`` for a bad setting, missing data or a failed fit.
    """
    config = plain_config(cfg)
    thread_tags = pin_threads(config, job)
    recorder = records.open_run(config, job, thread_tags) if get(config, "tracking", "enabled") else None
    try:
        load_plugins(config)  # before the network spec is read: it may name the plugins' layers
        config = apply_limits(config)
        if recorder is not None:
            recorder.log_params(records.tracking.flatten(config))
        outcome = run_experiment(config, records.RunRecords(recorder) if recorder is not None else None)
    except BaseException as error:
        if recorder is not None:
            records.close_failed(recorder, error)
        raise
    if recorder is not None:
        recorder.terminate(FINISHED)
        log.info("MLflow run %s FINISHED (%s)", recorder.run_id, recorder.artifact_uri)
    metrics = dict(outcome.metrics)
    for layer in outcome.report.layers:
        metrics.update(records.layer_metrics(layer))
    return metrics


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
    count = threads.threads_per_job(config.get("threads", "auto"), workers=workers)
    if count is None:
        return {"zorb.kernels.threads": "all", "zorb.cores": str(len(threads.available_cores()))}
    slot_dir = job.state.folder / ".cpu_slots" if workers is not None else None
    cores = threads.pin(count, slot_dir=slot_dir, slots=workers or 1)
    log.info("pinned to %d thread(s) on core(s) %s", count, ",".join(map(str, cores)))
    return {"zorb.kernels.threads": str(count), "zorb.cores": ",".join(map(str, cores))}
