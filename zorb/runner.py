"""Run one experiment from a composed config: load the data, build the network, fit,
evaluate and record everything in MLflow.

    python run.py dataset=iris network=iris solver.rcond=1e-9 seed=3   (Hydra, run.py)
    zorb.runner.main(cfg)                                            (tests, other tools)

Every setting is validated before any compute. A user-facing error (``zorb.ZorbError``)
marks the MLflow run FAILED and surfaces as ``RunFailed``: one sentence, which Hydra
prints without a traceback before exiting non-zero. In a multirun the other jobs go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import zorb
from zorb import hydra_callbacks, threads, tracking
from zorb.errors import ConfigError, ZorbError

log = logging.getLogger("zorb.runner")

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


class RunFailed(CompactHydraException):
    """A run stopped by a user-facing error; ``str(error)`` is its one sentence."""


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    name: str
    rcond: float
    u_rcond: float | None
    b_rcond: float | None
    ridge: float
    per_layer: dict[int, dict[str, Any]]

    def fit_options(self) -> dict[str, Any]:
        return {"solver": self.name, "rcond": self.rcond, "u_rcond": self.u_rcond, "b_rcond": self.b_rcond,
                "ridge": self.ridge, "per_layer": self.per_layer}


def fit_zorb(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int,
             callback: Callable) -> tuple[zorb.Network, zorb.FitReport]:
    """ZORB: every dense/conv2d layer solved once by least squares."""
    return zorb.fit(network, dataset.x_train, dataset.y_train, seed=seed, callback=callback,
                    **solver.fit_options())


METHODS: dict[str, Callable] = {"zorb": fit_zorb}
"""Training methods by ``method.name``: ``fn(network, dataset, solver, *, seed, callback)``
returning ``(trained network, report)`` where the report has ``fit_seconds``,
``compile_seconds`` and ``layers`` (``zorb.LayerReport``s, possibly empty)."""


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
    config = _plain(cfg)
    thread_tags = _pin_threads(config, job)
    recorder = _open_run(config, job, thread_tags) if _get(config, "tracking", "enabled") else None
    try:
        if recorder is not None:
            recorder.log_params(tracking.flatten(config))
        metrics = _experiment(config, recorder)
    except BaseException as error:
        if recorder is not None:
            _close_failed(recorder, error)
        raise
    if recorder is not None:
        recorder.terminate(FINISHED)
        log.info("MLflow run %s FINISHED (%s)", recorder.run_id, recorder.artifact_uri)
    return metrics


def _plain(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The config as plain resolved Python containers."""
    try:
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"the config cannot be resolved: {first_line}") from None


def _get(config: Mapping, *keys: str) -> Any:
    """``config[k1][k2]...`` with a ConfigError naming the missing key."""
    node: Any = config
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            path = ".".join(keys[: depth + 1])
            raise ConfigError(f"the config has no {path!r}: add it or pick a config that sets it")
        node = node[key]
    return node


def _hydra_config():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _pin_threads(config: Mapping, job) -> dict[str, str]:
    """Limit this job to its share of the cores before JAX starts (zorb/threads.py);
    returns tags describing the limit."""
    hydra_cfg = _hydra_config()
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
        return {"zorb.threads": "all", "zorb.cores": str(len(threads.available_cores()))}
    slot_dir = job.state.folder / ".cpu_slots" if workers is not None else None
    cores = threads.pin(count, slot_dir=slot_dir, slots=workers or 1)
    log.info("pinned to %d thread(s) on core(s) %s", count, ",".join(map(str, cores)))
    return {"zorb.threads": str(count), "zorb.cores": ",".join(map(str, cores))}


def _run_name(config: Mapping, job) -> str:
    name = f"{_get(config, 'dataset', 'name')}-{_get(config, 'network', 'name')}-seed{_get(config, 'seed')}"
    return name if job is None else f"{name} #{job.num}"


def _run_tags(config: Mapping, job) -> dict[str, str]:
    import jax

    hydra_cfg = _hydra_config()
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    tags = {
        **tracking.git_info(),
        "hydra.overrides": " ".join(overrides),
        "jax.version": jax.__version__,
        "jax.backend": jax.default_backend(),
        "jax.devices": ", ".join(str(d) for d in jax.devices()),
        "dtype": str(config.get("dtype")),
        "dataset": str(_get(config, "dataset", "name")),
        "network": str(_get(config, "network", "name")),
        "method": str(_get(config, "method", "name")),
        "solver": str(_get(config, "solver", "name")),
        "zorb.role": "job" if job is not None else "run",
    }
    tags["mlflow.source.git.commit"] = tags["git.commit"]
    if hydra_cfg is not None:
        tags["hydra.output_dir"] = str(hydra_cfg.runtime.output_dir)
    if job is not None:
        tags["zorb.sweep_dir"] = str(job.state.folder)
        tags["zorb.job_num"] = str(job.num)
    return tags


def _open_run(config: Mapping, job, extra_tags: Mapping[str, str]) -> tracking.RunRecorder:
    """Open this run's MLflow run (a child of the sweep's parent in a multirun) with its tags."""
    uri = tracking.resolve_tracking_uri(_get(config, "tracking", "uri"))
    experiment = str(_get(config, "tracking", "experiment"))
    parent_run_id = None
    if job is not None:
        # normally opened by MLflowSweepCallback.on_multirun_start; the first job opens it otherwise
        state = job.state.open_parent(tracking_uri=uri, experiment=experiment,
                                      expected_jobs=hydra_callbacks.count_jobs_in(job.state.folder),
                                      tags=tracking.git_info(), fresh=False)
        uri, parent_run_id = state["tracking_uri"], state["parent_run_id"]
        experiment_id = state["experiment_id"]
        client = tracking.client(uri)
    else:
        client = tracking.client(uri)
        experiment_id = tracking.experiment_id(client, uri, experiment)
    recorder = tracking.start_run(client, experiment_id, run_name=_run_name(config, job),
                                  tags={**_run_tags(config, job), **extra_tags},
                                  parent_run_id=parent_run_id)
    log.info("MLflow run %s in experiment %r at %s", recorder.run_id, experiment, uri)
    return recorder


def _close_failed(recorder: tracking.RunRecorder, error: BaseException) -> None:
    status = KILLED if isinstance(error, KeyboardInterrupt) else FAILED
    try:
        message = str(error) if isinstance(error, ZorbError) else f"{type(error).__name__}: {error}"
        recorder.set_tags({"error": message})
        _log_job_files(recorder)
    finally:
        recorder.terminate(status)
        log.info("MLflow run %s %s", recorder.run_id, status)


def solver_settings(config: Mapping) -> SolverSettings:
    """The solver group, validated (``zorb.check_solver_options``) before any compute."""
    solver = _get(config, "solver")
    name = _get(config, "solver", "name")
    rcond = solver.get("rcond", zorb.DEFAULT_RCOND)
    u_rcond, b_rcond, ridge = solver.get("u_rcond"), solver.get("b_rcond"), solver.get("ridge", 0.0)
    zorb.check_solver_options(name, rcond, u_rcond, b_rcond, ridge, str(config.get("dtype", "float64")))
    per_layer: dict[int, dict[str, Any]] = {}
    for key, options in (solver.get("per_layer") or {}).items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"solver.per_layer keys are 1-based layer positions, got {key!r}") from None
        if not isinstance(options, Mapping):
            raise ConfigError(f"solver.per_layer.{key} must be a mapping such as {{rcond: 1e-9}}, got {options!r}")
        per_layer[index] = dict(options)
    return SolverSettings(name=name, rcond=rcond, u_rcond=u_rcond, b_rcond=b_rcond, ridge=ridge,
                          per_layer=per_layer)


def _layer_specs(config: Mapping) -> list[dict[str, Any]]:
    layers = _get(config, "network", "layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("network.layers must be a non-empty list of layer specs such as {type: dense, units: 10}")
    return [dict(spec) if isinstance(spec, Mapping) else spec for spec in layers]


def _load_dataset(config: Mapping):
    from zorb.data import load_dataset

    options = dict(_get(config, "dataset"))
    name = options.pop("name", None)
    if name is None:
        raise ConfigError("the config has no 'dataset.name'")
    known = ("train_samples", "test_samples", "balanced", "replace", "flatten", "download")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"dataset has no option {unknown[0]!r} (options: {', '.join(known)})")
    return load_dataset(name, data_dir=_get(config, "data_dir"), seed=_get(config, "seed"), **options)


def _progress(network: zorb.Network, recorder: tracking.RunRecorder | None) -> Callable:
    """The fit's callback: one log line per solved layer, and its metrics in MLflow at once
    (a long fit shows its progress in the UI)."""
    total = len(network.parametric_indices)
    done = [0]

    def callback(report) -> None:
        done[0] += 1
        rows, cols = report.design_shape
        log.info("layer %d (%s, %d/%d): [A, 1] %d x %d, solve %.3f s, targets %.3f s, compile %.2f s, "
                 "rank %d/%d, cond %.3g", report.index, report.kind, done[0], total, rows, cols,
                 report.solve_seconds, report.target_seconds, report.compile_seconds, report.rank,
                 min(rows, cols), report.cond)
        if recorder is not None:
            recorder.log_metrics(layer_metrics(report))

    return callback


def layer_metrics(report) -> dict[str, float]:
    """``layer{i}.<figure>`` for one solved layer (``i`` its 1-based position)."""
    prefix = f"layer{report.index}."
    return {prefix + "solve_seconds": report.solve_seconds, prefix + "rank": report.rank,
            prefix + "cond": report.cond, prefix + "cutoff": report.cutoff,
            prefix + "target_seconds": report.target_seconds, prefix + "forward_seconds": report.forward_seconds,
            prefix + "compile_seconds": report.compile_seconds}


def _experiment(config: Mapping, recorder: tracking.RunRecorder | None) -> dict[str, float]:
    method_name = _get(config, "method", "name")
    if method_name not in METHODS:
        raise ConfigError(f"unknown method {method_name!r}; choose one of: {', '.join(METHODS)}")
    solver = solver_settings(config)
    specs = _layer_specs(config)
    seed = _get(config, "seed")
    started = time.perf_counter()
    dataset = _load_dataset(config)
    data_seconds = time.perf_counter() - started
    network = zorb.build_network(specs, dataset.input_shape, output_dim=dataset.output_dim, seed=seed,
                                 dtype=str(config.get("dtype", "float64")))
    log.info("%s: %d train / %d test samples, input %s, %d outputs (%s)", dataset.name,
             len(dataset.x_train), len(dataset.x_test), dataset.input_shape, dataset.output_dim, dataset.task)
    log.info("network %s:\n%s", config["network"]["name"], network.describe())
    log.info("fitting %d layer(s) with %s: solver %s, rcond %g, ridge %g", len(network.parametric_indices),
             method_name, solver.name, solver.rcond, solver.ridge)

    trained, report = METHODS[method_name](network, dataset, solver, seed=seed, callback=_progress(network, recorder))

    started = time.perf_counter()
    batch = config.get("eval_batch_size")
    train = zorb.evaluate(trained, dataset.x_train, dataset.y_train, task=dataset.task, batch_size=batch)
    test = zorb.evaluate(trained, dataset.x_test, dataset.y_test, task=dataset.task, batch_size=batch)
    eval_seconds = time.perf_counter() - started

    metrics = {f"train_{k}": v for k, v in train.items()}
    metrics.update({f"test_{k}": v for k, v in test.items()})
    metrics.update(fit_seconds=report.fit_seconds, compile_seconds=report.compile_seconds,
                   data_seconds=data_seconds, eval_seconds=eval_seconds,
                   train_samples=len(dataset.x_train), test_samples=len(dataset.x_test))
    summary = ", ".join(f"{k} {metrics[k]:.4g}" for k in ("train_accuracy", "test_accuracy", "train_error",
                                                         "test_error") if k in metrics)
    log.info("done: %s; fit %.2f s (+ %.2f s compile)", summary, report.fit_seconds, report.compile_seconds)

    if recorder is not None:
        recorder.log_metrics(metrics)
        _log_artifacts(recorder, config, trained, report)
    for layer in report.layers:
        metrics.update(layer_metrics(layer))
    return metrics


def _log_artifacts(recorder: tracking.RunRecorder, config: Mapping, trained: zorb.Network, report) -> None:
    """Spectra (one .npy per solved layer, a JSON summary, one figure), the model, configs, log."""
    from zorb.plots import spectra_figure

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
        (spectra / "summary.json").write_text(json.dumps(summary, indent=2))
        if report.layers:
            figure = spectra_figure(report.layers, title=f"{config['dataset']['name']} / "
                                                         f"{config['network']['name']}: spectra of [A, 1]")
            figure.savefig(spectra / "spectra.png", dpi=110)
        recorder.log_dir(spectra, "spectra")
        if _get(config, "tracking").get("log_model", True):
            model = Path(folder) / "model.npz"
            zorb.save(trained, model)
            recorder.log_file(model, "model")
    recorder.log_text(OmegaConf.to_yaml(OmegaConf.create(config)), "config.yaml")
    _log_job_files(recorder)


def _log_job_files(recorder: tracking.RunRecorder) -> None:
    """Hydra's record of the job (config.yaml, hydra.yaml, overrides.yaml) and its log file."""
    hydra_cfg = _hydra_config()
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
