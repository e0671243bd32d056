"""What is recorded about a run in MLflow: its name and tags, its params, each solved layer's
figures as the fit goes (also as series over the layers), the final metrics, the curve, the
train and test data as dataset inputs, the spectra, the MLflow model and the job's files.
``RunRecords`` is the experiment's observer (``zorb.runner.experiment.Observer``); a new
record touches this module only.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

import zorb
from zorb.errors import ZorbError
from zorb.runner import callbacks as hydra_callbacks
from zorb.runner import lifecycle, tracking
from zorb.runner import writer as zorb_writer
from zorb.runner.settings import get

log = logging.getLogger("zorb.runner.records")

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
WRITER_TAG = "zorb.mlflow_writer"
"""Who wrote the run to the store: ``process`` (a single run's writer process,
``zorb.runner.writer``) or ``run`` (the run's own process: a sweep's job, ``zorb.runner.main``)."""


def hydra_config():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_name(config: Mapping, job) -> str:
    """``<dataset>-<network>-<method>-seed<k>``, then `` #<job>`` in a sweep."""
    name = "-".join(str(get(config, key, "name")) for key in ("dataset", "network", "method"))
    name = f"{name}-seed{get(config, 'seed')}"
    return name if job is None else f"{name} #{job.num}"


def run_tags(config: Mapping, job) -> dict[str, str]:
    import jax

    hydra_cfg = hydra_config()
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    tags = {
        **tracking.git_info(),
        **tracking.machine_info(),
        "hydra.overrides": " ".join(overrides),
        "jax.version": jax.__version__,
        "jax.backend": jax.default_backend(),
        "jax.devices": ", ".join(str(d) for d in jax.devices()),
        "dtype": str(config.get("dtype")),
        "dataset": str(get(config, "dataset", "name")),
        "network": str(get(config, "network", "name")),
        "method": str(get(config, "method", "name")),
        "solver": str(get(config, "solver", "name")),
        "zorb.role": "job" if job is not None else "run",
    }
    tags["mlflow.source.git.commit"] = tags["git.commit"]
    if hydra_cfg is not None:
        tags["hydra.output_dir"] = str(hydra_cfg.runtime.output_dir)
    tags.update(experiment_tag())
    if lifecycle.slurm_job() is not None:
        tags["slurm.job_id"] = lifecycle.slurm_job()  # sacct -j <id> tells how SLURM ended it
    if job is not None:
        tags["zorb.sweep_dir"] = str(job.state.folder)
        tags["zorb.job_num"] = str(job.num)
    return tags


def experiment_tag() -> dict[str, str]:
    """``{"zorb.experiment": <name>}`` when Hydra composed this run with experiment=<name>."""
    hydra_cfg = hydra_config()
    choice = OmegaConf.select(hydra_cfg, "runtime.choices.experiment") if hydra_cfg is not None else None
    return {"zorb.experiment": str(choice)} if choice not in (None, "null") else {}


def open_run(config: Mapping, job, extra_tags: Mapping[str, str]) -> tracking.RunRecorder:
    """Open this run's MLflow run (a child of the sweep's parent in a multirun) with its tags:
    through the writer process ``run.py`` started for a single run (a
    ``zorb.runner.writer.RemoteRecorder``), else from this process."""
    uri = tracking.resolve_tracking_uri(get(config, "tracking", "uri"))
    experiment = str(get(config, "tracking", "experiment"))
    tags = {**run_tags(config, job), **extra_tags}
    if job is not None:
        # normally opened by MLflowSweepCallback.on_multirun_start; the first job opens it otherwise
        # the parent's state is read first: counting the sweep's jobs re-reads its saved config
        state = job.state.read() or job.state.open_parent(
            tracking_uri=uri, experiment=experiment, expected_jobs=hydra_callbacks.count_jobs_in(job.state.folder),
            tags={**tracking.git_info(), **experiment_tag(), **hydra_callbacks.saved_sweep_tags(job.state.folder)},
            fresh=False)
        uri = state["tracking_uri"]
        recorder = tracking.start_run(tracking.client(uri), state["experiment_id"], run_name=run_name(config, job),
                                      tags={**tags, WRITER_TAG: "run"}, parent_run_id=state["parent_run_id"])
    else:
        writer = zorb_writer.take()
        if writer is not None:  # a single run from run.py: its MLflow process opens the run meanwhile
            recorder = writer.open_run(uri, experiment, run_name(config, job), {**tags, WRITER_TAG: "process"})
            recorder.when_open(lambda run_id, experiment_id: log_opened(run_id, experiment, uri, experiment_id))
            return recorder
        recorder = tracking.open_run(uri, experiment, run_name=run_name(config, job), tags={**tags, WRITER_TAG: "run"})
    # what writing the finished run needs, loaded while it computes (a writer process loads its own)
    tracking.warm_up()
    log_opened(recorder.run_id, experiment, uri, recorder.experiment_id)
    return recorder


def log_opened(run_id: str, experiment: str, uri: str, experiment_id: str) -> None:
    log.info("MLflow run %s in experiment %r at %s (in the UI: #/experiments/%s/runs/%s?workflowType=machine_learning)",
             run_id, experiment, uri, experiment_id, run_id)


def close_failed(recorder: tracking.RunRecorder, error: BaseException) -> None:
    """End the run FAILED with ``error``'s sentence, or KILLED (with the signal named) when it
    was stopped from outside (``zorb.runner.lifecycle``)."""
    signal_name = lifecycle.stop_reason(error)
    status = FAILED if signal_name is None else KILLED
    try:
        if isinstance(error, (ZorbError, lifecycle.Stopped)):
            message = str(error)
        elif isinstance(error, KeyboardInterrupt):
            message = "stopped by SIGINT (Ctrl-C)"
        else:
            message = f"{type(error).__name__}: {error}"
        recorder.set_tags({"error": message, **({lifecycle.STOPPED_BY: signal_name} if signal_name else {})})
        log_job_files(recorder)
    finally:
        recorder.terminate(status)
        log.info("MLflow run %s %s", recorder.run_id, status)


PROGRESS_AFTER_SECONDS = 10.0
"""A fit that has run this long sends each solved layer's metrics to MLflow at once."""


class _Progress:
    """The fit's callback: one log line per solved layer, and its figures in MLflow.

    The fit's clock runs while the callback does, and one store write takes ~10 ms: as much
    as a whole small fit. So metrics wait for ``flush()`` after the fit until the fit has run
    ``PROGRESS_AFTER_SECONDS``; from then on (a long fit, where a write is noise) each layer's
    go out at once and the UI shows the progress.
    """

    def __init__(self, network: zorb.Network, recorder: tracking.RunRecorder | None):
        self.total = len(network.parametric_indices)
        self.recorder = recorder
        self.done = 0
        self.pending: list[tuple[str, float, int]] = []
        self.started = time.perf_counter()

    def __call__(self, report) -> None:
        self.done += 1
        rows, cols = report.design_shape
        log.info("layer %d (%s, %d/%d): [A, 1] %d x %d, solve %.3f s, targets %.3f s, compile %.2f s, "
                 "rank %d/%d, cond %.3g", report.index, report.kind, self.done, self.total, rows, cols,
                 report.solve_seconds, report.target_seconds, report.compile_seconds, report.rank,
                 min(rows, cols), report.cond)
        self.pending += layer_points(report)
        if time.perf_counter() - self.started >= PROGRESS_AFTER_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.recorder is not None and self.pending:
            self.recorder.log_points(self.pending)
        self.pending = []


LAYER_FIGURES = ("solve_seconds", "rank", "cond", "cutoff", "target_seconds", "forward_seconds", "compile_seconds", "ridge")


def layer_metrics(report) -> dict[str, float]:
    """``layer{i}.<figure>`` for one solved layer (``i`` its 1-based position in the network)."""
    return {f"layer{report.index}.{figure}": getattr(report, figure) for figure in LAYER_FIGURES}


def layer_points(report) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of one solved layer: ``layer{i}.<figure>`` at step 0, and the
    series ``layer.<figure>`` at step ``i``, so that one MLflow chart shows a figure across
    the layers."""
    return [(key, value, 0) for key, value in layer_metrics(report).items()] + \
        [(f"layer.{figure}", getattr(report, figure), report.index) for figure in LAYER_FIGURES]


def log_curve(recorder: tracking.RunRecorder, report) -> None:
    """A report's ``curve`` of ``(step, training seconds, train error)`` as two metric histories
    whose steps are the method's steps: ``curve.train_error`` and ``curve.train_seconds``; its
    ``accuracy_curves`` (Adam's watched sets) as ``curve.<name>_accuracy`` at the same steps."""
    curve = getattr(report, "curve", None)
    if not curve:
        return
    recorder.log_metric_history("curve.train_error", [(step, error) for step, _, error in curve])
    recorder.log_metric_history("curve.train_seconds", [(step, seconds) for step, seconds, _ in curve])
    for name, values in getattr(report, "accuracy_curves", {}).items():
        recorder.log_metric_history(f"curve.{name}_accuracy", [(step, value) for (step, _, _), value
                                                               in zip(curve, values)])


def log_datasets(recorder: tracking.RunRecorder, config: Mapping, dataset) -> None:
    """The train and test splits the run used as its MLflow inputs: name, digest (of the
    arrays), source (zorb's loader with the run's dataset options) and shapes."""
    from zorb.runner.experiment import arrays_digest

    source = {"loader": "zorb.data.load_dataset",
              **{f"dataset.{key}": str(value) for key, value in get(config, "dataset").items()},
              "seed": str(get(config, "seed")),
              **{f"limits.{key}": str(value) for key, value in get(config, "limits").items() if value is not None}}
    recorder.log_datasets([
        tracking.dataset_spec(split, f"{dataset.name}-{split}", arrays_digest([features, targets])[:DIGEST_LENGTH],
                              source, np.asarray(features), np.asarray(targets))
        for split, features, targets in (("train", dataset.x_train, dataset.y_train),
                                         ("test", dataset.x_test, dataset.y_test))])


DIGEST_LENGTH = 16
"""Hex digits of a dataset's SHA-256 kept as its MLflow digest (MLflow stores at most 36)."""


def log_model(recorder: tracking.RunRecorder, trained: zorb.Network) -> str:
    """The network as the MLflow model ``runs:/<run id>/model`` (a logged model, flavour
    ``pyfunc``; see ``zorb.runner.mlflow_model``), with zorb's ``.npz`` inside; returns the
    logged model's id."""
    import jax

    from zorb.runner import mlflow_model

    with tempfile.TemporaryDirectory() as folder:
        network = Path(folder) / mlflow_model.NETWORK_FILE
        zorb.save(trained, network)
        return recorder.log_network(str(network), np.dtype(trained.dtype).str, list(trained.input_shape),
                                    list(trained.output_shape), [f"jax=={jax.__version__}", f"numpy=={np.__version__}"],
                                    name=mlflow_model.ARTIFACT_PATH)


def log_artifacts(recorder: tracking.RunRecorder, config: Mapping, report) -> None:
    """Spectra (one .npy per solved layer, a JSON summary, the figures drawn from them by
    whichever process writes the run), configs, log."""
    with tempfile.TemporaryDirectory() as folder:
        spectra = Path(folder) / "spectra"
        spectra.mkdir()
        summary = []
        for layer in report.layers:
            np.save(spectra / f"layer{layer.index}.npy", np.asarray(layer.spectrum, dtype=np.float64))
            summary.append({"index": layer.index, "kind": layer.kind, "design_shape": list(layer.design_shape),
                            "solver": layer.solver, "u_rcond": layer.u_rcond, "b_rcond": layer.b_rcond,
                            "ridge": layer.ridge, "cutoff": layer.cutoff, "rank": layer.rank,
                            "cond": layer.cond if math.isfinite(layer.cond) else str(layer.cond)})
            if getattr(layer, "ridge_grid", None) is not None:  # ridge="auto": the GCV curve it chose from
                summary[-1].update(ridge_grid=np.asarray(layer.ridge_grid).tolist(),
                                   ridge_score=[float(v) if math.isfinite(v) else str(v)
                                                for v in np.asarray(layer.ridge_score, dtype=np.float64)])
        (spectra / "summary.json").write_text(json.dumps(summary, indent=2))
        recorder.log_spectra(spectra, f"{config['dataset']['name']} / {config['network']['name']}: spectra of [A, 1]")
    recorder.log_text(OmegaConf.to_yaml(OmegaConf.create(config)), "config.yaml")
    log_job_files(recorder)


def log_job_files(recorder: tracking.RunRecorder) -> None:
    """Hydra's record of the job (config.yaml, hydra.yaml, overrides.yaml) and its log file."""
    hydra_cfg = hydra_config()
    if hydra_cfg is None:
        return
    output = Path(str(hydra_cfg.runtime.output_dir))
    if hydra_cfg.output_subdir is not None and (output / str(hydra_cfg.output_subdir)).is_dir():
        recorder.log_dir(output / str(hydra_cfg.output_subdir), "hydra")
    job_log = output / f"{hydra_cfg.job.name}.log"
    if job_log.is_file():
        for handler in logging.getLogger().handlers:
            handler.flush()
        recorder.log_file(job_log, "logs")


class RunRecords:
    """The experiment's observer: records what happens into one open MLflow run."""

    def __init__(self, recorder: tracking.RunRecorder, timings: Mapping[str, float] | None = None):
        self.recorder = recorder
        self.progress: _Progress | None = None
        self.timings = dict(timings or {})  # the job's own phases (zorb.runner.job), logged with the metrics

    def network_built(self, network: zorb.Network) -> None:
        from zorb.runner.experiment import weights_digest

        waited = time.perf_counter()
        self.recorder.ready()  # a run that cannot be opened stops here, before the fit
        if "store_seconds" in self.timings:  # opening the run includes waiting here for a writer process
            self.timings["store_seconds"] += time.perf_counter() - waited
        self.recorder.set_tags({"zorb.init_sha256": weights_digest(network)})
        self.progress = _Progress(network, self.recorder)

    def data_warnings(self, warnings: Mapping[str, str]) -> None:
        self.recorder.set_tags({f"zorb.warning.{name}": sentence for name, sentence in warnings.items()})

    def layer_solved(self, report) -> None:
        if self.progress is not None:
            self.progress(report)

    def finished(self, outcome) -> None:
        started = time.perf_counter()
        pending = self.progress.pending if self.progress is not None else []
        if self.progress is not None:
            self.progress.pending = []
        model_id = None
        try:
            log_curve(self.recorder, outcome.report)
            log_datasets(self.recorder, outcome.config, outcome.dataset)
            log_artifacts(self.recorder, outcome.config, outcome.report)
            if get(outcome.config, "tracking").get("log_model", True):
                model_id = log_model(self.recorder, outcome.trained)
        finally:
            # the results in one store write, whatever happened to the artifacts: with the
            # model's id they are also the logged model's metrics (its row under "Logged models")
            self.recorder.log_points(pending + [(key, value, 0) for key, value in
                                                {**outcome.metrics, **self.timings}.items()], model_id=model_id)
        self.recorder.log_metrics({"logging_seconds": time.perf_counter() - started})
